"""The batch job: UTC days of the raw archive to verified, atomically published versions of their
minute, hour and day views — one day, a range (reprocessing), or the nightly run.

A run computes all its days in ONE Spark job (work that grows with their raw rows, not with
their number): it lists each day's input from the archive's index, reads those files and the
files of the ``batch.dedup_span_days`` days before each (for copies of an event re-stamped across
midnight), removes duplicate ``event_id``s, aggregates, writes every day's views under the run's
version, reads them back and verifies them (schema, row counts, equal totals in every view, and
every raw row of each day accounted for in exactly one event or one dropped cross-day copy),
then publishes each day on its own through the catalog and removes old versions. Nothing a
reader can see changes before a day's publication, so a run killed at any point leaves the
previously published versions in place.

Guards: a day is computed only when it is closed (its end plus ``batch.lateness`` has passed and
the archive has committed everything the topic held when the run started) unless forced, and a
version of an open day never moves the horizon; no version is published with fewer raw rows than
the index holds for its day or than the version it replaces, unless ``allow_shrink``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable

from adapters import log
from adapters.failpoints import failpoint
from adapters.lake import spark_uri
from batch_layer import source, transform
from batch_layer.catalog import (
    Catalog, PublishError, PublishResult, new_version, now_rfc3339, run_key,
)
from batch_layer.entry import PublicationEntry
from batch_layer.published import BatchState, closed_by_time, input_window
from schemas import __version__
from schemas.archive import VIEW_COLUMNS, spark_schema
from schemas.config import TallyConfig
from schemas.errors import TallyError
from schemas.granularity import GRANULARITIES, day_number
from speed_layer import archive_index
from speed_layer.archive_index import ArchiveIndex, IndexState

LOG = log.get("batch")

BROADCAST_MAX_IDS = 2_000_000  # repeated id hashes broadcast to the scan up to this many (~30 MB)
VIEW_ROWS_PER_FILE = 4_000_000  # a day's view is split into files of at most this many rows
# An input up to this size is read from the lake once and kept for the job's four passes over it
# (ids, repeated ids, the rest, raw rows per day): on S3 each pass costs requests per file.
KEEP_INPUT_MAX_BYTES = 256 << 20
SHRINK_REASON = ("the input has {rows:,} raw rows, fewer than the {published:,} of the published "
                 "version {version}; the archive is append-only, so files are missing; "
                 "`tally reprocess --allow-shrink` publishes anyway")
INDEX_SHRINK_REASON = ("the input has {rows:,} raw rows, fewer than the {indexed:,} the archive's "
                       "index holds for the day (a file changed or lost); `tally reprocess "
                       "--allow-shrink` publishes anyway")


class VerificationError(PublishError):
    """A written version does not match what was computed; it is not published."""


class NotClosed(TallyError):
    """The day (or the archive) is not closed for this run."""


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
    closed: bool = True

    @property
    def refused(self) -> bool:
        """Not published for a reason that needs a person (not "unchanged" or "a newer one")."""
        return not self.published and self.reason.startswith(("the input has", "not closed"))

    def line(self) -> str:
        if not self.version and not self.published:
            return f"{self.day}: not computed ({self.reason})"
        state = "published" if self.published else f"not published ({self.reason})"
        detail = ", ".join(f"{k} {v:.1f}s" for k, v in self.stages.items())
        return (f"{self.day}: {self.events:,} events from {self.raw_rows:,} raw rows, version "
                f"{self.version or '-'} {state} in {self.seconds:.1f}s" + (f" ({detail})" if detail else ""))

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day, "version": self.version or None, "published": self.published,
                "reason": self.reason or None, "events": self.events, "watch_ms": self.watch_ms,
                "raw_rows": self.raw_rows, "closed": self.closed, "rows": self.rows,
                "seconds": round(self.seconds, 1)}


@contextlib.contextmanager
def _shuffle_partitions(spark, cfg: TallyConfig, input_bytes: int):
    """About one shuffle partition per 128 MB of input (at least ``spark.shuffle_partitions``), so
    a large run does not aggregate millions of keys per task; adaptive execution coalesces the
    small ones. The session's setting is restored afterwards."""
    key = "spark.sql.shuffle.partitions"
    before = spark.conf.get(key)
    spark.conf.set(key, str(max(cfg.spark.shuffle_partitions, math.ceil(input_bytes / (128 << 20)))))
    try:
        yield
    finally:
        spark.conf.set(key, before)


def _now_ms() -> int:
    return int(time.time() * 1000)


def yesterday(now_ms: int | None = None) -> dt.date:
    now = dt.datetime.fromtimestamp((now_ms or _now_ms()) / 1000, dt.timezone.utc)
    return now.date() - dt.timedelta(days=1)


# Closed days ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Closure:
    """Whether the archive has committed every record the topic held when the run started."""

    ok: bool
    reason: str = ""
    lag: int | None = None
    waited_s: float = 0.0


def topic_end_offsets(cfg: TallyConfig) -> dict[int, int]:
    """The next offset of every partition of the events topic ({} when it does not exist)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, group_id=None,
                             request_timeout_ms=cfg.kafka.request_timeout_ms,
                             bootstrap_timeout_ms=cfg.kafka.request_timeout_ms,
                             client_id="tally-batch")
    try:
        parts = sorted(consumer.partitions_for_topic(cfg.kafka.topic) or [])
        if not parts:
            return {}
        tps = [TopicPartition(cfg.kafka.topic, p) for p in parts]
        return {tp.partition: int(off) for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def archive_lag(ends: dict[int, int], state: IndexState, topic: str) -> int:
    pos = state.archive if state.archive and state.archive.get("topic") == topic else None
    offsets = (pos or {}).get("offsets") or {}
    return sum(max(0, end - int(offsets.get(str(p), 0))) for p, end in ends.items())


def archive_closure(cfg: TallyConfig, index: ArchiveIndex, timeout_s: float | None = None,
                    ends: dict[int, int] | None = None) -> Closure:
    """Wait (up to ``batch.close_timeout_s``) until the archive's committed position, as the
    streaming job records it in the index after each archive batch, reaches the topic's end
    offsets read now."""
    timeout_s = cfg.batch.close_timeout_s if timeout_s is None else timeout_s
    if ends is None:
        try:
            ends = topic_end_offsets(cfg)
        except Exception as exc:  # noqa: BLE001 - Kafka down: nothing can be called closed
            return Closure(False, f"kafka: cannot read the end offsets of {cfg.kafka.topic} "
                                  f"({type(exc).__name__}: {exc})")
    t0 = time.monotonic()
    reported = 0.0
    while True:
        lag = archive_lag(ends, index.state(), cfg.kafka.topic)
        waited = time.monotonic() - t0
        if lag == 0:
            return Closure(True, waited_s=waited)
        if waited >= timeout_s:
            return Closure(False, f"the archive is {lag:,} records behind the topic "
                                  f"{cfg.kafka.topic} (waited {waited:.0f}s; is `tally stream` "
                                  f"running?)", lag, waited)
        if waited - reported >= 30:
            log.progress(f"batch: waiting for the archive to commit what the topic holds: "
                         f"{lag:,} records behind")
            reported = waited
        time.sleep(min(2.0, max(0.1, timeout_s - waited)))


def batch_state(cfg: TallyConfig, catalog: Catalog, state: IndexState, now_ms: int) -> BatchState:
    return BatchState(catalog.published_days(), state,
                      lambda day, seq: PublicationEntry.parse(catalog.entry(day, seq) or {"day": day}),
                      now_ms, cfg.batch.lateness_ms, cfg.batch.dedup_span_days,
                      cfg.batch.horizon_start)


# Computing days ----------------------------------------------------------------------------------

def compute(spark, cfg: TallyConfig, days: list[str], catalog: Catalog, index: ArchiveIndex,
            state: IndexState, closed: dict[str, bool], allow_shrink: bool = False,
            progress: str = "batch", pinned: frozenset[str] = frozenset()) -> list[DayResult]:
    """Compute, verify and publish ``days`` in one Spark job; one result per day.

    A pinned (rolled-back) day before a computed day is left out of its deduplication: the
    pinned version does not count what came later, so its copies must not make the later day
    drop an event either (each version records which span days it left out, and becomes
    pending when their pins change)."""
    t0 = time.monotonic()
    span = cfg.batch.dedup_span_days
    wanted = sorted(set(days))
    inputs = {d: source.day_input(cfg, d, index=index, state=state) for d in wanted}
    around = sorted({w for d in wanted for w in input_window(d, span)} - set(wanted) - pinned)
    span_inputs = {d: source.day_input(cfg, d, index=index, state=state) for d in around}
    files = [f for inp in [*inputs.values(), *span_inputs.values()] for f in inp.files]
    size = sum(f.size for f in files)
    log.progress(f"{progress}: {len(wanted)} day{'s' if len(wanted) != 1 else ''} "
                 f"({wanted[0]}..{wanted[-1]}): {sum(len(i.files) for i in inputs.values())} archive "
                 f"files, {size / 1e6:.1f} MB, and {len(around)} day(s) before for duplicates")
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    numbers = [day_number(d) for d in wanted]
    raw = (source.read_files(spark, files)
           .select("event_id", "video_id", "event_type", "ts", "watch_ms", "kafka_partition",
                   "kafka_offset")
           .transform(transform.with_day))
    stages: dict[str, float] = {}
    mark = time.monotonic()
    version = new_version()
    with _shuffle_partitions(spark, cfg, size):
        kept_input = size <= KEEP_INPUT_MAX_BYTES
        if kept_input:
            raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
        multi = transform.repeated_hashes(raw).persist(StorageLevel.MEMORY_AND_DISK)
        small = F.broadcast(multi) if multi.count() <= BROADCAST_MAX_IDS else multi
        # Persisted: the few rows of repeated ids (the cross-day bookkeeping reads them again)
        # and the minute counts (every view and check reads them), never the events themselves.
        repeated = transform.repeated_events_by_day(raw, numbers, span, small).persist(
            StorageLevel.MEMORY_AND_DISK)
        events = transform.distinct_events_by_day(raw, numbers, span, small, repeated=repeated)
        counted = transform.counted_minutes(events).persist(StorageLevel.MEMORY_AND_DISK)
        hours = None
        try:
            cross = {int(r["day"]): int(r["copies"]) for r in repeated.where(F.col("dropped") == 1)
                     .groupBy("day").agg(F.sum("copies").alias("copies")).collect()}
            # The minute view's checks and the raw rows it accounts for, per day, in one pass.
            minute_stats = transform.stats_by_day(counted, "copies")
            copies = {day_number(d): st[3] for d, st in minute_stats.items()}
            read_rows = {int(r["day"]): int(r["count"]) for r in
                         raw.where(F.col("day").isin(numbers)).groupBy("day").count().collect()}
            rolled = transform.views_from_minutes(transform.drop_bookkeeping(counted))
            # The hour view is read four times (its checks, its write, the day view's two).
            hours = rolled["hour"].persist(StorageLevel.MEMORY_AND_DISK)
            views = {g: v.withColumn("date", transform.bucket_date()) for g, v in rolled.items()}
            expected = {"minute": {d: st[:3] for d, st in minute_stats.items()},
                        **{g: transform.stats_by_day(rolled[g]) for g in ("hour", "day")}}
            stages["compute"] = time.monotonic() - mark
            for d, n in zip(wanted, numbers):
                acc = copies.get(n, 0) + cross.get(n, 0)
                if acc != read_rows.get(n, 0):
                    raise VerificationError(f"{d}: the views account for {acc} raw rows, the input "
                                            f"has {read_rows.get(n, 0)}")
            mark = time.monotonic()
            log.progress(f"{progress}: writing version {version}")
            for g in GRANULARITIES:
                # Few files per day and view, each sorted by video: a reader's filter on one video
                # skips the row groups of the others (no global sort, which costs a sampling pass).
                (_files_per_day(views[g], expected[g])
                 .sortWithinPartitions("date", "video_id", "event_type", "bucket_start")
                 .write.partitionBy("date").mode("errorifexists")
                 .parquet(spark_uri(catalog.store.url(f"{run_key(version)}/{g}"))))
                if g == "minute":
                    failpoint("batch.write", granularity=g)
            stages["write"] = time.monotonic() - mark
        finally:
            if hours is not None:
                hours.unpersist()
            counted.unpersist()
            repeated.unpersist()
            multi.unpersist()
            if kept_input:
                raw.unpersist()
    mark = time.monotonic()
    written = _verify(spark, catalog, version, wanted, expected)
    stages["verify"] = time.monotonic() - mark
    failpoint("batch.publish")
    results = []
    for d, n in zip(wanted, numbers):
        inp = inputs[d]
        got = {g: expected[g].get(d, (0, 0, 0)) for g in GRANULARITIES}
        events_n, watch = got["minute"][1], got["minute"][2]
        rows_read = read_rows.get(n, 0)
        record: dict[str, Any] = {
            "version": version,
            "computed_at": now_rfc3339(),
            "code_version": __version__,
            "closed": closed.get(d, False),
            "input": {**inp.describe(), "raw_rows": rows_read, "index_rows": inp.rows,
                      "distinct_events": events_n, "index_seq": state.seq,
                      "seen": {w: (state.days[w].last_seq if w in state.days else 0)
                               for w in input_window(d, span)},
                      "dedup_span_days": span,
                      "pinned_span_days": sorted(set(input_window(d, span)[:-1]) & pinned),
                      "cross_day_copies": cross.get(n, 0)},
            "totals": {"events": events_n, "watch_ms": watch},
            "views": {g: {"rows": got[g][0], "files": written[g].get(d, [])} for g in GRANULARITIES},
            "job": {"host": socket.gethostname(), "app_id": spark.sparkContext.applicationId,
                    "days": len(wanted), "seconds": {k: round(v, 1) for k, v in stages.items()}},
        }
        cur = catalog.current(d)
        if rows_read < inp.rows and not allow_shrink:
            result = PublishResult(False, cur["seq"] if cur else 0, version, INDEX_SHRINK_REASON.format(
                rows=rows_read, indexed=inp.rows))
        elif cur and rows_read < int(cur["input"].get("raw_rows", 0)) and not allow_shrink \
                and not cur.get("pinned"):
            result = PublishResult(False, cur["seq"], version, SHRINK_REASON.format(
                rows=rows_read, published=int(cur["input"]["raw_rows"]), version=cur["version"]))
        else:
            result = catalog.publish(d, record)
        if not result.published:
            log.progress(f"{progress} {d}: not published: {result.reason}")
        catalog.cleanup(d)
        results.append(DayResult(d, version, result.published, result.reason, events_n, watch,
                                 rows_read, time.monotonic() - t0, {g: got[g][0] for g in GRANULARITIES},
                                 stages, closed.get(d, False)))
        log.progress(f"[{len(results)}/{len(wanted)}] {results[-1].line()}")
    return results


def _files_per_day(view, stats: dict[str, tuple[int, int, int]]):
    """``view`` in partitions that each hold the rows of one day (or part of one): at most
    :data:`VIEW_ROWS_PER_FILE` rows a file when days are about even. One day is coalesced (no
    shuffle); several are shuffled by day and a hash of the video."""
    from pyspark.sql import functions as F

    per_day = {d: max(1, math.ceil(rows / VIEW_ROWS_PER_FILE)) for d, (rows, _, _) in stats.items()}
    if len(per_day) <= 1:
        return view.coalesce(max(per_day.values(), default=1))
    split = max(per_day.values())
    return (view.withColumn("_file", F.pmod(F.xxhash64("video_id"), F.lit(split)))
            .repartition(sum(per_day.values()), "date", "_file").drop("_file"))


def _verify(spark, catalog: Catalog, version: str, days: list[str],
            expected: dict[str, dict[str, tuple[int, int, int]]]) -> dict[str, dict[str, list[str]]]:
    """Read the run's views back; returns their files per view and day (relative to the lake)."""
    import re

    from pyspark.sql import functions as F

    want_schema = [(f.name, f.dataType) for f in spark_schema(VIEW_COLUMNS).fields]
    files: dict[str, dict[str, list[str]]] = {}
    for g in GRANULARITIES:
        base = f"{run_key(version)}/{g}"
        files[g] = {}
        for k in catalog.store.list(base + "/"):
            m = re.search(r"/date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$", k)
            if m:
                files[g].setdefault(m.group(1), []).append(k)
        got: dict[str, tuple[int, int, int]] = {}
        if files[g]:
            df = (spark.read.option("basePath", spark_uri(catalog.store.url(base)))
                  .parquet(*[spark_uri(catalog.store.url(k)) for ks in files[g].values() for k in ks]))
            schema = [(f.name, f.dataType) for f in df.schema.fields if f.name != "date"]
            if schema != want_schema:
                raise VerificationError(f"{g}: written schema {schema} is not the view schema")
            got = transform.stats_by_day(df, date=F.col("date").cast("string"))
        for d in days:
            if got.get(d, (0, 0, 0)) != expected[g].get(d, (0, 0, 0)):
                raise VerificationError(f"{d} {g}: wrote (rows, events, watch_ms) = "
                                        f"{got.get(d, (0, 0, 0))}, computed {expected[g].get(d, (0, 0, 0))}")
    for d in days:
        totals = {expected[g].get(d, (0, 0, 0))[1:] for g in GRANULARITIES}
        if len(totals) != 1:
            raise VerificationError(f"{d}: the views' totals differ: {totals}")
    return files


def _not_computed(day: str, reason: str, cur: PublicationEntry | None, closed: bool = False) -> DayResult:
    """A day left as it is: its published version's figures, if it has one."""
    if cur is None:
        return DayResult(day, "", False, reason, 0, 0, 0, 0.0, {}, {}, closed)
    return DayResult(day, cur.version, False, reason, cur.events, cur.watch_ms, cur.input.raw_rows,
                     0.0, {g: rows for g, (rows, _files) in cur.views.items()}, {}, closed)


# What a command asks for ---------------------------------------------------------------------------

@dataclass
class RunReport:
    """What a run did: its days' results and, for the nightly run, what it left and why."""

    mode: str
    results: list[DayResult]
    closed: bool = True
    reason: str = ""
    left_pending: list[str] = dataclasses.field(default_factory=list)
    pinned: list[str] = dataclasses.field(default_factory=list)
    compacted: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def refused(self) -> list[str]:
        return [r.day for r in self.results if r.refused]

    def to_json(self) -> dict[str, Any]:
        return {"command": self.mode, "closed": self.closed, "reason": self.reason or None,
                "days": [r.to_json() for r in self.results], "left_pending": self.left_pending,
                "pinned": self.pinned, "compacted": self.compacted, "notes": self.notes,
                "refused": self.refused, "seconds": round(self.seconds, 1)}

    def lines(self) -> list[str]:
        out = [r.line() for r in self.results]
        if not self.closed:
            out.append(f"nothing computed: {self.reason}")
        out += self.notes
        if self.pinned:
            out.append(f"pinned (rolled back; left as they are): {', '.join(self.pinned)}")
        if self.left_pending:
            out.append(f"still pending (over batch.max_days_per_run): {', '.join(self.left_pending)}")
        if self.compacted:
            out.append(f"compacted: {', '.join(self.compacted)}")
        return out


def _chunks(days: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(days), n):
        yield days[i:i + n]


def _open_reason(cfg: TallyConfig) -> str:
    return (f"not closed: its end plus batch.lateness ({cfg.batch.lateness}) has not passed; "
            f"--force computes it anyway (a version of an open day does not move the horizon)")


def not_closed_by_time(cfg: TallyConfig, days: list[dt.date]) -> list[DayResult]:
    """The days of a request that are not closed by time (refused without --force)."""
    now = _now_ms()
    return [_not_computed(d.isoformat(), _open_reason(cfg), None) for d in days
            if not closed_by_time(d.isoformat(), now, cfg.batch.lateness_ms)]


def run_dates(spark, cfg: TallyConfig, days: list[dt.date], force: bool = False,
              allow_shrink: bool = False, skip_unchanged: bool = False,
              mode: str = "reprocess") -> RunReport:
    """``tally batch --date D`` (``skip_unchanged``) and ``tally reprocess``: the given days,
    each only if it is closed (unless ``force``); pinned days only with ``force`` or as a
    reprocess (which unpins them)."""
    t0 = time.monotonic()
    catalog = Catalog(cfg)
    index = ArchiveIndex(catalog.store)
    now = _now_ms()
    archive_index.sync(cfg, catalog.store, by=mode, index=index)
    names = [d.isoformat() for d in days]
    open_days = [d for d in names if not closed_by_time(d, now, cfg.batch.lateness_ms)]
    closure = archive_closure(cfg, index)
    state = index.state()
    bstate = batch_state(cfg, catalog, state, now)
    report = RunReport(mode, [])
    todo, closed = [], {}
    for d in names:
        is_closed = d not in open_days and closure.ok
        cur = bstate.current(d)
        if not is_closed and not force:
            why = (_open_reason(cfg) if d in open_days else
                   f"not closed: {closure.reason}; --force computes it anyway (a version of an "
                   f"open day does not move the horizon)")
            report.results.append(_not_computed(d, why, cur))
            continue
        if cur and cur.pinned and mode == "batch" and not force:
            report.results.append(_not_computed(d, "pinned: rolled back; --force recomputes it", cur, True))
            continue
        if (skip_unchanged and not force and cur and cur.code_version == __version__
                and not bstate.needs_run(d)):
            report.results.append(_not_computed(d, "unchanged input: the published version stands",
                                                cur, True))
            continue
        todo.append(d)
        closed[d] = is_closed
    for chunk in _chunks(todo, cfg.batch.max_days_per_run):
        report.results += compute(spark, cfg, chunk, catalog, index, state, closed, allow_shrink,
                                  mode, _pinned(bstate, chunk))
    report.results.sort(key=lambda r: r.day)
    report.seconds = time.monotonic() - t0
    return report


def run_nightly(spark, cfg: TallyConfig, compact: bool = True) -> RunReport:
    """``tally batch`` without ``--date``: yesterday once it is closed (published even when
    empty), every closed pending or unpublished day of any age (newest first, at most
    ``batch.max_days_per_run``), then compaction of every closed day with files no manifest
    covers yet. Rolled-back (pinned) days are left alone and reported."""
    t0 = time.monotonic()
    catalog = Catalog(cfg)
    index = ArchiveIndex(catalog.store)
    now = _now_ms()
    archive_index.sync(cfg, catalog.store, by="nightly", index=index)
    closure = archive_closure(cfg, index)
    report = RunReport("nightly", [], closure.ok, closure.reason)
    if not closure.ok:
        report.seconds = time.monotonic() - t0
        return report
    state = index.state()
    bstate = batch_state(cfg, catalog, state, now)
    lateness = cfg.batch.lateness_ms
    last = yesterday(now).isoformat()
    start = cfg.batch.horizon_start
    candidates = set(state.raw_days())
    if closed_by_time(last, now, lateness):
        candidates.add(last)
    else:
        report.notes.append(f"{last} is not closed yet: its end plus batch.lateness "
                            f"({cfg.batch.lateness}) has not passed")
    todo = []
    for d in sorted(candidates, reverse=True):
        if not closed_by_time(d, now, lateness) or (start and d < start):
            continue
        if bstate.pinned(d):
            report.pinned.append(d)
            continue
        if bstate.needs_run(d):
            todo.append(d)
    run, report.left_pending = todo[:cfg.batch.max_days_per_run], sorted(todo[cfg.batch.max_days_per_run:])
    report.pinned.sort()
    if run:
        report.results = compute(spark, cfg, run, catalog, index, state, {d: True for d in run},
                                 progress="batch", pinned=_pinned(bstate, run))
    if compact:
        from batch_layer.compact import compact_day

        for d, summary in sorted(index.state().days.items()):
            if summary.files > summary.compacted and closed_by_time(d, now, lateness):
                if compact_day(spark, cfg, dt.date.fromisoformat(d), index) is not None:
                    report.compacted.append(d)
    report.results.sort(key=lambda r: r.day)
    report.seconds = time.monotonic() - t0
    return report


def _pinned(bstate: BatchState, days: list[str]) -> frozenset[str]:
    """The pinned days among those the ``days`` deduplicate against (not computed themselves)."""
    around = {w for d in days for w in input_window(d, bstate.span)} - set(days)
    return frozenset(d for d in around if bstate.pinned(d))


def run_day(spark, cfg: TallyConfig, day: dt.date, catalog: Catalog | None = None,
            skip_unchanged: bool = False, allow_shrink: bool = False,
            force: bool = False) -> DayResult:
    """One day, as ``tally reprocess`` of a one-day range computes it (tests, benchmarks)."""
    report = run_dates(spark, cfg, [day], force=force, allow_shrink=allow_shrink,
                       skip_unchanged=skip_unchanged)
    return report.results[0]


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise ValueError("--to: must not be before --from")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

