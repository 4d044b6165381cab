"""The batch layer's input: the raw archive files Spark's file sink committed for a day.

The archive is read through the sink's own ``_spark_metadata`` log (compacted ``N.compact`` files
plus the deltas after them), never by listing directories: a file the sink wrote but never
committed (a killed micro-batch, a retried task) is not in the log and is never read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass

from schemas.archive import (
    ARCHIVE_COLUMNS, ARCHIVE_KEY, ARCHIVE_PARTITION_COLUMNS, COMPACTED_KEY, IMPORTS_KEY, spark_schema,
)
from schemas.config import TallyConfig
from tally.lake import LakeStore, lake_store, spark_uri

_LOG_NAME = re.compile(r"^(\d+)(\.compact)?$")


@dataclass(frozen=True)
class ArchiveFile:
    path: str  # as the sink recorded it: a full URI
    size: int


@dataclass(frozen=True)
class DayInput:
    """What one day's computation read: enough to tell whether two runs saw the same input."""

    day: str
    files: tuple[ArchiveFile, ...]
    listed_at: str  # when the log was read (RFC 3339, UTC)

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


def committed_files(store: LakeStore, archive_key: str = ARCHIVE_KEY) -> list[ArchiveFile]:
    """Every file the archive's sink has committed, from its metadata log."""
    meta = f"{archive_key}/_spark_metadata/"
    batches: dict[int, str] = {}
    compacts: list[int] = []
    for key in store.list(meta):
        m = _LOG_NAME.match(key[len(meta):])
        if m:
            batches[int(m.group(1))] = key
            if m.group(2):
                compacts.append(int(m.group(1)))
    if not batches:
        return []
    start = max(compacts) if compacts else 0
    files: dict[str, ArchiveFile] = {}
    for batch in sorted(b for b in batches if b >= start):
        data = store.get(batches[batch])
        if data is None:  # removed by the sink's own log cleanup while we listed
            continue
        lines = data.decode().splitlines()
        if not lines or lines[0].strip() != "v1":
            raise ValueError(f"{batches[batch]}: unknown sink log version {lines[:1]!r}")
        for line in lines[1:]:
            if not line.strip():
                continue
            e = json.loads(line)
            if e.get("action") == "delete":
                files.pop(e["path"], None)
            elif not e.get("isDir"):
                files[e["path"]] = ArchiveFile(e["path"], int(e["size"]))
    return sorted(files.values(), key=lambda f: f.path)


def sink_roots(store: LakeStore) -> list[str]:
    """The archive's file sinks: the streaming job's and one per import."""
    roots = {ARCHIVE_KEY}
    for key in store.list(f"{IMPORTS_KEY}/"):
        head, sep, _ = key.partition("/_spark_metadata/")
        if sep:
            roots.add(head)
    return sorted(roots)


def compaction_log(day: str) -> str:
    return f"{COMPACTED_KEY}/event_date={day}/_log/"


def latest_compaction(store: LakeStore, day: str) -> dict | None:
    """The newest compaction manifest of a day (see :mod:`batch_layer.compact`), if any."""
    keys = [k for k in store.list(compaction_log(day)) if k.endswith(".json")]
    data = store.get(max(keys)) if keys else None
    return json.loads(data) if data else None


def day_input(cfg: TallyConfig, day: dt.date, store: LakeStore | None = None) -> DayInput:
    """The day's committed archive files: those of its newest compaction, plus every file the
    sinks committed for the day that the compaction did not cover (late arrivals since)."""
    store = store or lake_store(cfg)
    listed_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    marker = f"/event_date={day.isoformat()}/"
    files = [f for root in sink_roots(store) for f in committed_files(store, root) if marker in f.path]
    manifest = latest_compaction(store, day.isoformat())
    if manifest:
        covered = set(manifest["covered"])
        files = [ArchiveFile(f["path"], f["size"]) for f in manifest["files"]] + \
                [f for f in files if f.path not in covered]
    return DayInput(day.isoformat(), tuple(files), listed_at)


def read_input(spark, inp: DayInput):
    """The archive rows of the input's files (without the partition columns)."""
    schema = spark_schema(tuple(c for c in ARCHIVE_COLUMNS if c.name not in ARCHIVE_PARTITION_COLUMNS))
    if not inp.files:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(*[spark_uri(f.path) for f in inp.files])
