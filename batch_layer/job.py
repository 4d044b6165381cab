"""The batch job: one UTC day of the raw archive to a verified, atomically published version of
its minute, hour and day views; and the reprocessing of a range of days.

Steps for a day: list the input from the archive sink's log, remove duplicate ``event_id``s,
aggregate, write the views under a new version path, read them back and verify them (schema, row
counts, equal totals in every view, and every raw row of the input accounted for in exactly one
event of one bucket), publish through the catalog, and remove old versions. Nothing a reader can see changes before the publication step, so a run killed at any
point leaves the previously published version in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from batch_layer import source, transform
from batch_layer.catalog import (
    Catalog, PublishError, PublishResult, new_version, now_rfc3339, version_key,
)
from schemas.archive import VIEW_COLUMNS, spark_schema
from schemas.config import TallyConfig
from tally import __version__, log
from tally.lake import spark_uri

LOG = log.get("batch")


VIEW_ROWS_PER_FILE = 4_000_000
BROADCAST_MAX_IDS = 2_000_000  # repeated id hashes broadcast to the scan up to this many (~30 MB)
SHRINK_REASON = ("the input has {rows:,} raw rows, fewer than the {published:,} of the published "
                 "version {version}; the archive is append-only, so files are missing (deleted, or "
                 "dropped from the sink log by its retention); --allow-shrink publishes anyway")


class VerificationError(PublishError):
    """A written version does not match what was computed; it is not published."""


@dataclass
class DayResult:
    day: str
    version: str
    published: bool
    reason: str
    events: int
    watch_ms: int
    raw_rows: int
    seconds: float
    rows: dict[str, int]
    stages: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def refused(self) -> bool:
        """Not published for a reason that needs a person (not "unchanged" or "a newer one")."""
        return not self.published and self.reason.startswith("the input has")

    def line(self) -> str:
        state = "published" if self.published else f"not published ({self.reason})"
        detail = ", ".join(f"{k} {v:.1f}s" for k, v in self.stages.items())
        return (f"{self.day}: {self.events:,} events from {self.raw_rows:,} raw rows, version "
                f"{self.version} {state} in {self.seconds:.1f}s" + (f" ({detail})" if detail else ""))


def _fault(point: str) -> None:
    """Fault injection for the crash tests: ``TALLY_FAULT_KILL_BATCH=<point>`` kills the process."""
    if os.environ.get("TALLY_FAULT_KILL_BATCH") == point:
        log.progress(f"fault injection: SIGKILL at {point}")
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _shuffle_partitions(spark, cfg: TallyConfig, input_bytes: int):
    """About one shuffle partition per 128 MB of input (at least ``spark.shuffle_partitions``), so
    a large day does not aggregate millions of keys per task; adaptive execution coalesces the
    small ones. The session's setting is restored afterwards."""
    key = "spark.sql.shuffle.partitions"
    before = spark.conf.get(key)
    spark.conf.set(key, str(max(cfg.spark.shuffle_partitions, math.ceil(input_bytes / (128 << 20)))))
    try:
        yield
    finally:
        spark.conf.set(key, before)


def yesterday() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)


def run_day(spark, cfg: TallyConfig, day: dt.date, catalog: Catalog | None = None,
            skip_unchanged: bool = False, allow_shrink: bool = False) -> DayResult:
    """Compute, verify and publish one day. With ``skip_unchanged`` (the nightly re-runs of the
    last days), a day whose published version was computed by this code from the same input files
    is left as it is.

    The archive is append-only, so a day's raw rows can only grow: an input with fewer raw rows
    than the published version's means files went missing (deleted, or dropped from the sink's
    log by its retention) and is not published unless ``allow_shrink``."""
    t0 = time.monotonic()
    catalog = catalog or Catalog(cfg)
    name = day.isoformat()
    inp = source.day_input(cfg, day, catalog.store)
    log.progress(f"batch {name}: input {len(inp.files)} archive files, {inp.bytes / 1e6:.1f} MB")
    if skip_unchanged:
        cur = catalog.current(name)
        if (cur and cur["input"]["fingerprint"] == inp.fingerprint
                and cur.get("code_version") == __version__):
            return DayResult(name, cur["version"], False, "unchanged input: the published version stands",
                             cur["totals"]["events"], cur["totals"]["watch_ms"],
                             cur["input"]["raw_rows"], time.monotonic() - t0,
                             {g: v["rows"] for g, v in cur["views"].items()})
    raw = source.read_input(spark, inp).select(
        "event_id", "video_id", "event_type", "ts", "watch_ms", "kafka_partition", "kafka_offset")
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    stages: dict[str, float] = {}
    mark = time.monotonic()
    with _shuffle_partitions(spark, cfg, inp.bytes):
        # The hashes of the ids that repeat: usually a few percent, small enough to broadcast.
        multi = transform.repeated_hashes(raw).persist(StorageLevel.MEMORY_AND_DISK)
        n_multi = multi.count()
        small = F.broadcast(multi) if n_multi <= BROADCAST_MAX_IDS else multi
        counted = transform.minute_counts(transform.distinct_events(raw, small)).persist(
            StorageLevel.MEMORY_AND_DISK)
        try:
            views = transform.views_from_minutes(transform.drop_bookkeeping(counted))
            raw_rows = raw.count()
            expected = {g: transform.view_stats(v) for g, v in views.items()}
            accounted = transform.rows_accounted(counted)
            stages["compute"] = time.monotonic() - mark
            if accounted != raw_rows:
                raise VerificationError(f"{name}: the views account for {accounted} raw rows, the "
                                        f"input has {raw_rows}")
            mark = time.monotonic()
            version = new_version()
            base = spark_uri(catalog.store.url(version_key(name, version)))
            log.progress(f"batch {name}: writing version {version}")
            for g in transform.VIEWS:
                # Few files, each sorted by video: a reader's filter on one video skips the
                # row groups of the others (no global sort, which costs a sampling pass).
                n_files = max(1, math.ceil(expected[g][0] / VIEW_ROWS_PER_FILE))
                (views[g].coalesce(n_files).sortWithinPartitions("video_id", "event_type", "bucket_start")
                 .write.mode("errorifexists").parquet(f"{base}/{g}"))
                if g == "minute":
                    _fault("write")
            stages["write"] = time.monotonic() - mark
        finally:
            counted.unpersist()
            multi.unpersist()

    mark = time.monotonic()
    files = _verify(spark, catalog, name, version, expected)
    stages["verify"] = time.monotonic() - mark
    events_n, watch = expected["minute"][1], expected["minute"][2]
    record: dict[str, Any] = {
        "version": version,
        "computed_at": now_rfc3339(),
        "code_version": __version__,
        "input": {**inp.describe(), "raw_rows": raw_rows, "distinct_events": events_n},
        "totals": {"events": events_n, "watch_ms": watch},
        "views": {g: {"rows": expected[g][0], "files": files[g]} for g in transform.VIEWS},
        "job": {"host": socket.gethostname(), "app_id": spark.sparkContext.applicationId,
                "seconds": {k: round(v, 1) for k, v in stages.items()}},
    }
    _fault("publish")
    cur = catalog.current(name)
    if cur and raw_rows < cur["input"]["raw_rows"] and not allow_shrink:
        result = PublishResult(False, cur["seq"], version, SHRINK_REASON.format(
            rows=raw_rows, published=cur["input"]["raw_rows"], version=cur["version"]))
    else:
        result = catalog.publish(name, record)
    if not result.published:
        log.progress(f"batch {name}: not published: {result.reason}")
    catalog.cleanup(name)
    return DayResult(name, version, result.published, result.reason, events_n, watch, raw_rows,
                     time.monotonic() - t0, {g: expected[g][0] for g in transform.VIEWS}, stages)


def _verify(spark, catalog: Catalog, day: str, version: str,
            expected: dict[str, tuple[int, int, int]]) -> dict[str, list[str]]:
    """Read the written version back; returns its files per view (relative to the lake)."""
    want_schema = spark_schema(VIEW_COLUMNS)
    files: dict[str, list[str]] = {}
    for g in transform.VIEWS:
        prefix = f"{version_key(day, version)}/{g}/"
        files[g] = [k for k in catalog.store.list(prefix) if k.endswith(".parquet")]
        if files[g]:
            df = spark.read.parquet(*[spark_uri(catalog.store.url(k)) for k in files[g]])
            got_schema = [(f.name, f.dataType) for f in df.schema.fields]
            if got_schema != [(f.name, f.dataType) for f in want_schema.fields]:
                raise VerificationError(f"{day} {g}: written schema {got_schema} is not the view schema")
            got = transform.view_stats(df)
        else:
            got = (0, 0, 0)
        if got != expected[g]:
            raise VerificationError(f"{day} {g}: wrote (rows, events, watch_ms) = {got}, "
                                    f"computed {expected[g]}")
    if len({(e, w) for _r, e, w in expected.values()}) != 1:
        raise VerificationError(f"{day}: the views' totals differ: {expected}")
    return files


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise ValueError("--to: must not be before --from")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def run_days(spark, cfg: TallyConfig, days: list[dt.date], skip_unchanged: bool = False,
             allow_shrink: bool = False) -> list[DayResult]:
    """Each day computed and published on its own; progress after each."""
    catalog = Catalog(cfg)
    results = []
    t0 = time.monotonic()
    for i, day in enumerate(days, 1):
        r = run_day(spark, cfg, day, catalog, skip_unchanged=skip_unchanged, allow_shrink=allow_shrink)
        results.append(r)
        eta = (time.monotonic() - t0) / i * (len(days) - i)
        log.progress(f"[{i}/{len(days)}] {r.line()}" + (f"; about {eta:.0f}s left" if i < len(days) else ""))
    return results
