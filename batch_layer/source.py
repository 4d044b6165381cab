"""The batch layer's input: the raw archive files of a day, as the archive's per-day index lists
them (:mod:`speed_layer.archive_index`): a day's newest compacted files plus every file the sinks
committed for it that they do not cover. Never a directory listing: a file a killed micro-batch
wrote but never committed is not in any sink log, so not in the index, and is never read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from adapters.lake import LakeStore, lake_store, spark_uri
from schemas.archive import ARCHIVE_COLUMNS, ARCHIVE_PARTITION_COLUMNS, spark_schema
from schemas.config import TallyConfig
from speed_layer.archive_index import ArchiveIndex, IndexState


@dataclass(frozen=True)
class ArchiveFile:
    path: str  # as the sink recorded it: a full URI
    size: int
    rows: int = 0


@dataclass(frozen=True)
class DayInput:
    """What one day's computation reads: enough to tell whether two runs saw the same input,
    and whether the archive has committed anything for the day since."""

    day: str
    files: tuple[ArchiveFile, ...]
    listed_at: str  # when the index was read (RFC 3339, UTC)
    rows: int = 0  # raw rows the index holds for the day (every copy of every event)
    last_seq: int = 0  # the index segment that last added raw data to the day

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\t{f.size}\n".encode())
        return h.hexdigest()[:32]

    def describe(self) -> dict:
        return {"files": len(self.files), "bytes": self.bytes, "fingerprint": self.fingerprint,
                "listed_at": self.listed_at}


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_input(cfg: TallyConfig, day: dt.date | str, store: LakeStore | None = None,
              index: ArchiveIndex | None = None, state: IndexState | None = None) -> DayInput:
    """The day's input as of ``state`` (default: the index as it is now)."""
    index = index or ArchiveIndex(store or lake_store(cfg))
    state = state or index.state()
    name = day if isinstance(day, str) else day.isoformat()
    files = index.day(name, state)
    summary = state.days.get(name)
    return DayInput(name, tuple(ArchiveFile(f.path, f.size, f.rows) for f in files.input_files()),
                    now_rfc3339(), files.rows, summary.last_seq if summary else 0)


def read_files(spark, files):
    """The archive rows of ``files`` (without the partition columns)."""
    schema = spark_schema(tuple(c for c in ARCHIVE_COLUMNS if c.name not in ARCHIVE_PARTITION_COLUMNS))
    paths = sorted({f.path for f in files})
    if not paths:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(*[spark_uri(p) for p in paths])


def read_input(spark, inp: DayInput):
    """The archive rows of one day's input."""
    return read_files(spark, inp.files)
