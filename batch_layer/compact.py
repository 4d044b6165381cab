"""Compaction of a closed day of the raw archive: its many small files (one per micro-batch and
hour) rewritten into a few large ones, without changing its content.

Only the files no compaction covers yet are rewritten, to ``raw/compacted/event_date=D/c=<id>/``;
they are verified against their input (row count and an order-independent checksum of every
row), then a manifest is appended to the day's compaction log (create-if-absent, like the batch
views' publication) naming every compacted file of the day and every sink file they cover, and
the archive's index records it. From then on readers read the compacted files plus any file
committed for the day that the manifest does not cover (late arrivals), so nothing is lost or
read twice. The original files are left in place; nothing reads them any more.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid

from adapters import log
from adapters.lake import lake_store, spark_uri
from batch_layer import source
from schemas.archive import ARCHIVE_COLUMNS, ARCHIVE_PARTITION_COLUMNS, COMPACTED_KEY
from schemas.config import TallyConfig
from schemas.errors import TallyError
from speed_layer import archive_index
from speed_layer.archive_index import ArchiveIndex

TARGET_FILE_BYTES = 128 * 1024 * 1024


class CompactionError(TallyError):
    """The compacted files do not hold exactly the day's rows; nothing was published."""


def _fingerprint(df) -> tuple[int, int]:
    """(rows, order-independent checksum of every column of every row)."""
    from pyspark.sql import functions as F

    cols = [c.name for c in ARCHIVE_COLUMNS if c.name not in ARCHIVE_PARTITION_COLUMNS]
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 F.sum(F.xxhash64(*cols).cast("decimal(38,0)")).alias("h")).first()
    return int(row["n"]), int(row["h"] or 0)


def compaction_log(day: str) -> str:
    return f"{COMPACTED_KEY}/event_date={day}/_log/"


def compact_day(spark, cfg: TallyConfig, day: dt.date, index: ArchiveIndex | None = None) -> dict | None:
    """Rewrite the day's sink files that no compaction covers yet into a few large files and
    append a manifest covering them and everything the previous one covered; returns it (None
    when every file of the day is covered already). Work grows with the uncovered files only, so
    the late files of an old day cost what they hold."""
    store = lake_store(cfg)
    index = index or ArchiveIndex(store)
    archive_index.sync(cfg, store, index=index, by="compact")
    name = day.isoformat()
    files = index.day(name)
    if not files.files:
        raise TallyError(f"--date {name}: the archive has no files for this day")
    todo = files.uncovered()
    if not todo:
        log.progress(f"compact {name}: every file is covered by manifest {files.compaction.manifest}")
        return None
    size = sum(f.size for f in todo)
    log.progress(f"compact {name}: {len(todo)} files, {size / 1e6:.1f} MB")
    raw = source.read_files(spark, todo)
    want = _fingerprint(raw)
    ident = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    key = f"{COMPACTED_KEY}/event_date={name}/c={ident}"
    n_files = max(1, math.ceil(size / TARGET_FILE_BYTES))
    (raw.repartition(n_files).sortWithinPartitions("video_id", "ts")
     .write.mode("errorifexists").parquet(spark_uri(store.url(key))))
    written = [k for k in store.list(key + "/") if k.endswith(".parquet")]
    out = spark.read.schema(raw.schema).parquet(*[spark_uri(store.url(k)) for k in written])
    got = _fingerprint(out)
    if got != want:
        raise CompactionError(f"{name}: compacted files hold (rows, checksum) {got}, the input {want}")
    previous = files.compaction
    manifest = {
        "day": name, "id": ident, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "rows": (previous.rows if previous else 0) + want[0], "checksum": str(want[1]),
        # Always expressed in sink files: what the previous manifest covered and what it adds.
        "covered": sorted((previous.covered if previous else frozenset()) | {f.path for f in todo}),
        "files": ([{"path": f.path, "size": f.size} for f in previous.files] if previous else [])
        + [{"path": store.url(k), "size": store.size(k)} for k in written],
    }
    logkey = compaction_log(name)
    for _ in range(100):
        seq = len([k for k in store.list(logkey) if k.endswith(".json")]) + 1
        mkey = f"{logkey}{seq:010d}.json"
        if store.put_if_absent(mkey, json.dumps(manifest, indent=1).encode()):
            break
    else:
        raise CompactionError(f"{name}: could not append to the compaction log")
    counter = archive_index.RowCounter(cfg)
    known = {f.path: f.rows for f in previous.files} if previous else {}
    entry = archive_index.compaction_entry(name, mkey, manifest,
                                           lambda p: known[p] if p in known else counter.rows(p))
    archive_index.sync(cfg, store, compactions=[entry], by="compact", index=index)
    log.progress(f"compact {name}: {len(todo)} files -> {len(written)} ({want[0]:,} rows, "
                 f"checksum equal), manifest {seq}")
    return manifest
