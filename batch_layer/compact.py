"""Compaction of a closed day of the raw archive: its many small files (one per micro-batch and
hour) rewritten into a few large ones, without changing its content.

The compacted files go to ``raw/compacted/event_date=D/c=<id>/``; they are verified against the
input (row count and an order-independent checksum of every row), then a manifest is appended to
the day's compaction log (create-if-absent, like the batch views' publication) naming the
compacted files and every file they cover. From then on the batch layer reads the compacted files
plus any file committed for the day that the manifest does not cover (late arrivals), so nothing
is lost or read twice. Compaction also keeps a day readable once the sink's log has dropped its
entries (``retention``). The original files are left in place; nothing reads them any more.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid

from batch_layer import source
from schemas.archive import ARCHIVE_COLUMNS, ARCHIVE_PARTITION_COLUMNS, COMPACTED_KEY
from schemas.config import TallyConfig
from tally import log
from tally.errors import TallyError
from tally.lake import lake_store, spark_uri

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


def compact_day(spark, cfg: TallyConfig, day: dt.date) -> dict:
    store = lake_store(cfg)
    name = day.isoformat()
    inp = source.day_input(cfg, day, store)
    if not inp.files:
        raise TallyError(f"--date {name}: the archive has no files for this day")
    log.progress(f"compact {name}: {len(inp.files)} files, {inp.bytes / 1e6:.1f} MB")
    raw = source.read_input(spark, inp)
    want = _fingerprint(raw)
    ident = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    key = f"{COMPACTED_KEY}/event_date={name}/c={ident}"
    n_files = max(1, math.ceil(inp.bytes / TARGET_FILE_BYTES))
    (raw.repartition(n_files).sortWithinPartitions("video_id", "ts")
     .write.mode("errorifexists").parquet(spark_uri(store.url(key))))
    written = [k for k in store.list(key + "/") if k.endswith(".parquet")]
    out = spark.read.schema(raw.schema).parquet(*[spark_uri(store.url(k)) for k in written])
    got = _fingerprint(out)
    if got != want:
        raise CompactionError(f"{name}: compacted files hold (rows, checksum) {got}, the input {want}")
    # What the manifest covers is always expressed in sink files: those the previous compaction
    # covered (its compacted files were part of this input) and the uncovered ones read now.
    previous = source.latest_compaction(store, name)
    prev_files = {f["path"] for f in previous["files"]} if previous else set()
    covered = sorted(set(previous["covered"] if previous else ()) |
                     {f.path for f in inp.files if f.path not in prev_files})
    manifest = {
        "day": name, "id": ident, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "rows": want[0], "checksum": str(want[1]), "covered": covered,
        "files": [{"path": store.url(k), "size": store.size(k)} for k in written],
    }
    logkey = source.compaction_log(name)
    for _ in range(100):
        seq = len([k for k in store.list(logkey) if k.endswith(".json")]) + 1
        if store.put_if_absent(f"{logkey}{seq:010d}.json", json.dumps(manifest, indent=1).encode()):
            break
    else:
        raise CompactionError(f"{name}: could not append to the compaction log")
    log.progress(f"compact {name}: {len(inp.files)} files -> {len(written)} ({want[0]:,} rows, "
                 f"checksum equal), manifest {seq}")
    return manifest
