"""The streaming application: three queries over ``tally.events``, each with its own checkpoint.

* ``speed``: parse and validate (the JVM validator, :mod:`schemas.event_jvm`), drop copies of an ``event_id`` within the
  watermark, count per (video, event type, UTC minute) in update mode, and write the updated
  minutes to HBase as absolute values (``foreachBatch``; a replayed batch rewrites the same cells).
* ``archive``: every valid record, duplicates included, to the lake as Parquet through Spark's
  file sink (exactly once through its ``_spark_metadata`` log), partitioned by event date and hour.
  Its own query, so an HBase outage never stops archiving.
* ``dlq``: every invalid record, unchanged, to ``tally.events.dlq`` with headers ``tally.error``
  and ``tally.source``.

Checkpoints live on local disk under ``<state>/checkpoints/<query>`` and are guarded by a lock
file, so a second job on the same checkpoints fails fast. After each speed micro-batch a progress
record (batch id, highest event time, watermark, rows dropped as late, the archive's position) goes
to HBase and to the log. When HBase stays down past the write retries the speed batch fails; the
app restarts that query from its checkpoint with backoff while the archive keeps running.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import failpoints, log
from schemas.config import TallyConfig
from schemas.errors import TallyError
from speed_layer import transform
from speed_layer.metrics import StreamMetrics, partition_lag

LOG = log.get("speed")
QUERIES = ("speed", "archive", "dlq")


class CheckpointInUse(TallyError):
    """Another streaming job holds these checkpoints."""


class CheckpointLock:
    """An exclusive ``flock`` on ``<checkpoint dir>.lock``, held for the life of the job."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise CheckpointInUse(
                f"checkpoint {self.path.with_suffix('')} is in use by a running streaming job "
                f"(pid {holder}); stop it first, or give this job its own state directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


@dataclass
class ProgressState:
    """What the listener keeps between progress events."""

    archive: dict[str, Any] = field(default_factory=dict)
    dlq: dict[str, Any] = field(default_factory=dict)
    last_input_at: float = field(default_factory=time.monotonic)
    batches: dict[str, int] = field(default_factory=dict)


def _offsets(source: dict[str, Any]) -> dict[str, dict[str, int]] | None:
    end = source.get("endOffset")
    try:
        return json.loads(end) if isinstance(end, str) else end
    except ValueError:
        return None


def _kafka_lag(source: dict[str, Any]) -> int | None:
    """Records of the topic behind the batch's end, summed over partitions (None when Spark did
    not report the latest offsets)."""
    lag = partition_lag(source)
    return sum(lag.values()) if lag else None


def _ms(text: Any) -> int | None:
    from schemas.event import parse_rfc3339_ms

    return parse_rfc3339_ms(str(text)) if text else None


def time_counters(p: dict[str, Any], previous: dict[str, Any] | None) -> tuple[dict[str, list[int]], int]:
    """This batch's per-day counters from its observed metrics: {day: [dropped late, ahead of
    the clock]}, and the rows Spark dropped as late that the candidates do not account for.

    Spark filters a batch's late rows against the watermark the previous batch reported (the
    previous progress record's), so the late ones are the candidates at or before it."""
    from speed_layer.transform import TIME_METRICS

    observed = (p.get("observedMetrics") or {}).get(TIME_METRICS) or {}
    out: dict[str, list[int]] = {}
    for b in observed.get("ahead") or ():
        day = (dt.date(1970, 1, 1) + dt.timedelta(days=int(b["x"]))).isoformat()
        out.setdefault(day, [0, 0])[1] += int(b["y"])
    watermark = _ms((previous or {}).get("watermark")) if previous else None
    attributed = 0
    if watermark:
        for t in observed.get("late") or ():
            if int(t) <= watermark:
                day = (dt.date(1970, 1, 1) + dt.timedelta(days=int(t) // 86_400_000)).isoformat()
                out.setdefault(day, [0, 0])[0] += 1
                attributed += 1
    dropped = sum(int(op.get("numRowsDroppedByWatermark", 0) or 0) for op in p.get("stateOperators", []))
    return out, max(0, dropped - attributed)


def progress_record(p: dict[str, Any], previous: dict[str, Any] | None,
                    archive: dict[str, Any]) -> dict[str, Any]:
    """The speed layer's progress record from a Spark progress event (as a dict).

    ``dropped_late`` and ``ahead_of_clock`` are cumulative over the checkpoint's life: the
    previous record's totals plus this batch's (each committed batch is reported once; a batch
    reported again replaces its own contribution). ``batch_days`` holds this batch's per-day
    counters ({day: [dropped late, ahead of the clock]}), which the listener adds to the per-day
    counters row; ``late_unattributed`` counts rows Spark dropped that no day could be given."""
    dropped = sum(int(op.get("numRowsDroppedByWatermark", 0) or 0) for op in p.get("stateOperators", []))
    prev = previous or {}
    replay = bool(previous) and int(prev.get("batch_id", -1)) >= int(p["batchId"])
    # On a replayed batch, the watermark it filtered with is the one before the previous record.
    before = prev.get("previous_watermark") if replay else prev.get("watermark")
    days, unattributed = time_counters(p, {"watermark": before} if before else None)
    base = {k: int(prev.get(k, 0) or 0) - (int(prev.get(f"{k}_in_batch", 0) or 0) if replay else 0)
            for k in ("dropped_late", "ahead_of_clock", "late_unattributed")}
    ahead = sum(v[1] for v in days.values())
    event_time = p.get("eventTime") or {}
    return {
        "batch_id": int(p["batchId"]),
        "max_event_time": event_time.get("max") or prev.get("max_event_time"),
        "watermark": event_time.get("watermark") or prev.get("watermark"),
        "previous_watermark": before,
        "processing_time": p.get("timestamp"),
        "input_rows": int(p.get("numInputRows", 0)),
        "dropped_late": base["dropped_late"] + dropped,
        "dropped_late_in_batch": dropped,
        "ahead_of_clock": base["ahead_of_clock"] + ahead,
        "ahead_of_clock_in_batch": ahead,
        "late_unattributed": base["late_unattributed"] + unattributed,
        "late_unattributed_in_batch": unattributed,
        "batch_days": days,
        "replayed": replay,
        "kafka_lag": _kafka_lag(p["sources"][0]) if p.get("sources") else None,
        # Where the speed query has read up to ({topic: {partition: next offset}}).
        "offsets": _offsets(p["sources"][0]) if p.get("sources") else None,
        "archive": archive,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def make_listener(cfg: TallyConfig, state: ProgressState, metrics: StreamMetrics):
    from pyspark.sql.streaming import StreamingQueryListener

    from adapters.lake import lake_store
    from speed_layer import archive_index
    from speed_layer.store import ARCHIVE_ROW, HBaseSpeedStore

    store = HBaseSpeedStore(cfg, retry_s=5)
    lake = lake_store(cfg)
    index = archive_index.ArchiveIndex(lake)

    class ProgressListener(StreamingQueryListener):
        def onQueryStarted(self, event) -> None:  # noqa: N802 - Spark's names
            LOG.info("query started: %s", event.name)
            metrics.started(str(event.id), event.name)

        def onQueryIdle(self, event) -> None:  # noqa: N802
            metrics.idle(str(event.id))  # a trigger without new data: the query is alive

        def onQueryTerminated(self, event) -> None:  # noqa: N802
            if event.exception:
                LOG.warning("query %s terminated: %s", event.id, event.exception.splitlines()[0])

        def onQueryProgress(self, event) -> None:  # noqa: N802
            p = json.loads(event.progress.json)
            try:
                metrics.progress(p)
            except Exception as exc:  # noqa: BLE001 - a listener must never kill the job
                LOG.warning("metrics not updated: %s: %s", type(exc).__name__, exc)
            try:
                self._progress(p)
            except Exception as exc:  # noqa: BLE001 - a listener must never kill the job
                LOG.warning("progress record not written: %s: %s", type(exc).__name__, exc)

        def _progress(self, p: dict[str, Any]) -> None:
            name = p.get("name")
            if int(p.get("numInputRows", 0)) > 0:
                state.last_input_at = time.monotonic()
            state.batches[name] = int(p["batchId"])
            if name == "archive":
                src = p["sources"][0] if p.get("sources") else {}
                state.archive = {"batch_id": int(p["batchId"]), "rows": int(p.get("numInputRows", 0)),
                                 "offsets": _offsets(src), "kafka_lag": _kafka_lag(src),
                                 "processing_time": p.get("timestamp")}
                self._index(state.archive)
                store.write_progress(state.archive, ARCHIVE_ROW)
                log.kv(LOG, 20, "archive batch", **{k: v for k, v in state.archive.items() if k != "offsets"})
                return
            if name != "speed":
                return
            previous = store.read_progress()
            record = progress_record(p, previous, state.archive)
            # Per-day counters first (a replayed batch takes back what it added before): the
            # record names the batch, so a crash between the two writes is found by the replay.
            deltas = {d: list(v) for d, v in record["batch_days"].items()}
            if record["replayed"]:
                for d, v in ((previous or {}).get("batch_days") or {}).items():
                    cur = deltas.setdefault(d, [0, 0])
                    cur[0] -= int(v[0])
                    cur[1] -= int(v[1])
            if any(v[0] or v[1] for v in deltas.values()):
                store.add_day_counters(deltas)
            store.write_progress(record)
            if record["ahead_of_clock_in_batch"]:
                metrics.ahead.labels("speed").inc(record["ahead_of_clock_in_batch"])
            log.kv(LOG, 20, "speed batch", batch_id=record["batch_id"], rows=record["input_rows"],
                   max_event_time=record["max_event_time"], watermark=record["watermark"],
                   dropped_late=record["dropped_late"], ahead_of_clock=record["ahead_of_clock"],
                   kafka_lag=record["kafka_lag"],
                   archive_lag=state.archive.get("kafka_lag"))

        def _index(self, archive: dict[str, Any]) -> None:
            """The archive's per-day index learns the batch's files and the committed position
            (a failure here is caught up by the next batch's sync or the nightly run's)."""
            offsets = (archive.get("offsets") or {}).get(cfg.kafka.topic)
            position = ({"topic": cfg.kafka.topic, "offsets": {str(k): int(v) for k, v in offsets.items()},
                         "at": archive.get("processing_time")} if offsets else None)
            try:
                archive_index.sync(cfg, lake, archive=position, by="stream", index=index)
            except Exception as exc:  # noqa: BLE001 - a listener must never kill the job
                LOG.warning("archive index not updated: %s: %s", type(exc).__name__, exc)

    return ProgressListener()


class StreamingApp:
    """Builds, supervises and stops the three streaming queries of one installation."""

    def __init__(self, spark, cfg: TallyConfig, trigger: str | None = None,
                 until_idle_s: float | None = None, archive_trigger: str | None = None):
        self.spark = spark
        self.cfg = cfg
        self.trigger = trigger or cfg.stream.trigger
        self.archive_trigger = archive_trigger or cfg.stream.archive_trigger
        self.until_idle_s = until_idle_s
        self.checkpoints = cfg.state_path / "checkpoints"
        self.locks = [CheckpointLock(self.checkpoints / f"{q}.lock") for q in QUERIES]
        self.queries: dict[str, Any] = {}
        self.state = ProgressState()
        self.metrics = StreamMetrics()
        self._stop = threading.Event()
        self._listener = None

    # -- building ---------------------------------------------------------------------------------
    def _source(self):
        k = self.cfg.kafka
        reader = (self.spark.readStream.format("kafka")
                  .option("kafka.bootstrap.servers", k.bootstrap_servers)
                  .option("subscribe", k.topic)
                  .option("startingOffsets", "earliest")
                  .option("failOnDataLoss", "true")
                  .option("kafka.max.partition.fetch.bytes", str(k.max_message_bytes)))
        if self.cfg.stream.max_offsets_per_trigger > 0:
            reader = reader.option("maxOffsetsPerTrigger", str(self.cfg.stream.max_offsets_per_trigger))
        return transform.parse(reader.load(), self.cfg)

    def _start_speed(self):
        from pyspark.sql import functions as F

        from speed_layer.store import write_partition

        cfg, metrics = self.cfg, self.metrics
        counts = transform.minute_counts(transform.valid(self._source()), cfg.stream.watermark,
                                         cfg.events.ahead_tolerance_ms)

        def write_batch(batch_df, batch_id: int) -> None:
            rows = batch_df.select("video_id", "event_type",
                                   F.unix_millis("bucket_start").alias("minute_ms"),
                                   "count", "watch_ms")
            try:
                retries = rows.rdd.mapPartitions(lambda it: [write_partition(cfg, it)]).collect()
            except Exception:
                metrics.hbase_write(0, failed=True)
                raise
            metrics.hbase_write(sum(retries), failed=False)
            if failpoints.armed():  # after the HBase write, before Spark commits the batch
                failpoints.failpoint("stream.speed_written", batch_id=batch_id,
                                     empty=batch_df.isEmpty())

        return (counts.writeStream.queryName("speed").outputMode("update")
                .foreachBatch(write_batch)
                .option("checkpointLocation", str(self.checkpoints / "speed"))
                .trigger(processingTime=self.trigger).start())

    def _start_archive(self):
        from speed_layer import archive

        rows = transform.archive_rows(transform.valid(self._source()))
        return (archive.write_stream(rows, self.cfg, self.checkpoints / "archive")
                .trigger(processingTime=self.archive_trigger).start())

    def _start_dlq(self):
        k = self.cfg.kafka
        return (transform.dead_letters(self._source()).writeStream.queryName("dlq").format("kafka")
                .option("kafka.bootstrap.servers", k.bootstrap_servers)
                .option("topic", k.dlq_topic)
                .option("kafka.max.request.size", str(k.max_message_bytes))
                .option("kafka.acks", "all")
                .option("checkpointLocation", str(self.checkpoints / "dlq"))
                # Dead letters need no freshness, and every micro-batch re-plans the validation:
                # on the archive's (slower) trigger, not the speed layer's.
                .trigger(processingTime=self.archive_trigger).start())

    def start(self) -> None:
        for lock in self.locks:
            lock.acquire()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        from speed_layer.archive import check_sink_owner

        check_sink_owner(self.cfg, self.checkpoints / "archive")
        self._listener = make_listener(self.cfg, self.state, self.metrics)
        self.spark.streams.addListener(self._listener)
        self.queries["archive"] = self._start_archive()
        self.queries["dlq"] = self._start_dlq()
        self.queries["speed"] = self._start_speed()
        log.progress(f"stream: queries speed (trigger {self.trigger}), archive (trigger "
                     f"{self.archive_trigger}) and dlq (same trigger) running; checkpoints in "
                     f"{self.checkpoints}")

    # -- running ----------------------------------------------------------------------------------
    def request_stop(self, *_args: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM, to this process or to the driver's JVM, stop the queries
        between micro-batches (the JVM's own handler would exit it under them)."""
        from adapters.spark import route_stop_signals

        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        route_stop_signals(self.spark, self.request_stop)

    def _idle(self) -> bool:
        if self.until_idle_s is None:
            return False
        if not all(q.isActive for q in self.queries.values()):
            # A query being restarted (the speed query after an HBase outage) is not idle.
            self.state.last_input_at = time.monotonic()
            return False
        for q in self.queries.values():
            status = q.status
            # A query not yet through its first trigger since it (re)started may still be
            # initialising its sources with a backlog behind them: not idle either.
            if (status.get("isDataAvailable") or status.get("isTriggerActive")
                    or q.lastProgress is None):
                self.state.last_input_at = time.monotonic()
                return False
        return time.monotonic() - self.state.last_input_at >= self.until_idle_s

    def run(self) -> int:
        """Supervise until stopped (signal, ``--until-idle``); returns the exit code."""
        restart_delay = 2.0
        while not self._stop.is_set():
            for name, q in list(self.queries.items()):
                if q.isActive:
                    continue
                exc = q.exception()
                if name == "speed" and exc is not None:
                    LOG.warning("speed query failed (%s); restarting from its checkpoint in %.0fs",
                                str(exc).splitlines()[0][:300], restart_delay)
                    log.progress(f"stream: speed query failed, restarting in {restart_delay:.0f}s: "
                                 f"{str(exc).splitlines()[0][:200]}")
                    if self._stop.wait(restart_delay):
                        break
                    restart_delay = min(restart_delay * 2, 30.0)
                    self.queries["speed"] = self._start_speed()
                    self.metrics.query_state("speed", True, restarted=True)
                    continue
                self.stop()
                raise TallyError(f"stream: query {name} stopped: "
                                 f"{str(exc).splitlines()[0] if exc else 'without an error'}")
            for name, q in self.queries.items():
                self.metrics.query_state(name, q.isActive)
            if self.queries["speed"].isActive and self.queries["speed"].lastProgress:
                restart_delay = 2.0
            if self._idle():
                log.progress(f"stream: no new input for {self.until_idle_s:.0f}s; stopping")
                break
            self._stop.wait(0.5)
        self.stop()
        return 0

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop every query between micro-batches when possible, then release the checkpoints."""
        deadline = time.monotonic() + timeout_s
        for name, q in self.queries.items():
            while q.isActive and q.status.get("isTriggerActive") and time.monotonic() < deadline:
                time.sleep(0.1)
            try:
                q.stop()
            except Exception as exc:  # noqa: BLE001 - stopping must go on for the others
                LOG.warning("stopping query %s: %s", name, exc)
        if self._listener is not None:
            try:
                self.spark.streams.removeListener(self._listener)
            except Exception:  # noqa: BLE001
                LOG.debug("listener already removed")
            self._listener = None
        for lock in self.locks:
            lock.release()
