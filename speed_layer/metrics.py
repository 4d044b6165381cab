"""The streaming job's Prometheus metrics, per query of its pipeline (``query`` label: speed,
archive, dlq), fed by the progress events of Spark's query listener and by the speed query's
HBase writes, and served from the driver (``metrics.stream_port``).

Times relative to the wall clock (the watermark's distance, the age of the last progress) are
computed at scrape time, so a stuck job shows a growing age rather than a frozen value.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.metrics import add_build_info
from schemas.event import parse_rfc3339_ms

BATCH_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def partition_lag(source: dict[str, Any]) -> dict[tuple[str, str], int]:
    """{(topic, partition): records between what the batch read up to and the topic's end}
    from one Kafka source's progress (empty when Spark did not report the latest offsets)."""
    end = _json(source.get("endOffset")) or {}
    latest = _json(source.get("latestOffset")) or {}
    out = {}
    if not isinstance(latest, dict):
        return out
    for topic, parts in latest.items():
        done = end.get(topic, {}) if isinstance(end, dict) else {}
        for part, offset in (parts or {}).items():
            try:
                out[(topic, str(part))] = max(0, int(offset) - int(done.get(part, 0)))
            except (TypeError, ValueError):
                continue
    return out


class StreamMetrics:
    """The registry of one streaming job and what feeds it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = reg = CollectorRegistry()
        self._lock = threading.Lock()
        self._watermark_s: float | None = None
        self._max_event_s: float | None = None
        self._last: dict[str, float] = {}  # query name -> when it last completed a trigger
        self._names: dict[str, str] = {}  # query id -> name
        add_build_info(reg, "stream")
        q = ["query"]
        self.input_rows = Counter("tally_stream_input_rows_total", "rows read from Kafka", q,
                                  registry=reg)
        self.batches = Counter("tally_stream_batches_total", "micro-batches completed", q,
                               registry=reg)
        self.input_rate = Gauge("tally_stream_input_rows_per_second", "rows per second arriving "
                                "(last micro-batch)", q, registry=reg)
        self.processed_rate = Gauge("tally_stream_processed_rows_per_second", "rows per second "
                                    "processed (last micro-batch)", q, registry=reg)
        self.duration = Histogram("tally_stream_batch_duration_seconds", "micro-batch duration "
                                  "(trigger execution)", q, buckets=BATCH_BUCKETS, registry=reg)
        self.lag = Gauge("tally_stream_kafka_lag_records", "records of the topic behind what the "
                         "query has read (archive lag: query=\"archive\")",
                         ["query", "topic", "partition"], registry=reg)
        self.dropped_late = Counter("tally_stream_dropped_late_rows_total", "rows the watermark "
                                    "dropped as late (left to the batch layer)", q, registry=reg)
        self.ahead = Counter("tally_stream_ahead_of_clock_rows_total", "rows left out of the speed "
                             "views for an event time ahead of the receiving clock", q,
                             registry=reg)
        self.state_rows = Gauge("tally_stream_state_rows", "rows held in the query's state "
                                "(deduplication and minute counts)", q, registry=reg)
        self.state_bytes = Gauge("tally_stream_state_memory_bytes", "memory of the query's state "
                                 "store", q, registry=reg)
        self.hbase_retries = Counter("tally_stream_hbase_write_retries_total", "HBase write "
                                     "calls retried by the speed query", registry=reg)
        self.hbase_failures = Counter("tally_stream_hbase_write_failures_total", "speed "
                                      "micro-batches whose HBase write failed (the query restarts "
                                      "from its checkpoint)", registry=reg)
        self.restarts = Counter("tally_stream_query_restarts_total", "queries restarted after a "
                                "failure", q, registry=reg)
        self.active = Gauge("tally_stream_query_active", "1 while the query runs", q, registry=reg)
        for name in ("speed", "archive", "dlq"):
            for metric in (self.input_rows, self.batches, self.dropped_late, self.restarts):
                metric.labels(name)
        self.ahead.labels("speed")
        reg.register(_Clocked(self))

    def progress(self, p: dict[str, Any], ahead_in_batch: int = 0) -> None:
        """One Spark progress event (as a dict); ``ahead_in_batch``: the speed query's rows left
        out as ahead of the clock in this batch."""
        name = str(p.get("name") or "unknown")
        rows = int(p.get("numInputRows", 0) or 0)
        self.input_rows.labels(name).inc(rows)
        self.batches.labels(name).inc()
        self.input_rate.labels(name).set(float(p.get("inputRowsPerSecond", 0) or 0))
        self.processed_rate.labels(name).set(float(p.get("processedRowsPerSecond", 0) or 0))
        trigger_ms = (p.get("durationMs") or {}).get("triggerExecution")
        if trigger_ms is not None:
            self.duration.labels(name).observe(float(trigger_ms) / 1000)
        for source in p.get("sources") or ():
            for (topic, part), lag in partition_lag(source).items():
                self.lag.labels(name, topic, part).set(lag)
        ops = p.get("stateOperators") or []
        if ops:
            self.state_rows.labels(name).set(sum(int(o.get("numRowsTotal", 0) or 0) for o in ops))
            self.state_bytes.labels(name).set(
                sum(int(o.get("memoryUsedBytes", 0) or 0) for o in ops))
            self.dropped_late.labels(name).inc(
                sum(int(o.get("numRowsDroppedByWatermark", 0) or 0) for o in ops))
        if ahead_in_batch:
            self.ahead.labels(name).inc(ahead_in_batch)
        event_time = p.get("eventTime") or {}
        with self._lock:
            self._last[name] = self.clock()
            watermark = parse_rfc3339_ms(event_time["watermark"]) if event_time.get("watermark") else None
            if watermark:  # Spark reports the epoch until the query has a watermark
                self._watermark_s = watermark / 1000
            if event_time.get("max"):
                self._max_event_s = parse_rfc3339_ms(event_time["max"]) / 1000

    def started(self, query_id: str, name: str | None) -> None:
        with self._lock:
            self._names[query_id] = name or "unknown"

    def idle(self, query_id: str) -> None:
        """Spark reports a trigger that found no new data as idle, not as progress."""
        with self._lock:
            name = self._names.get(query_id)
            if name is not None:
                self._last[name] = self.clock()

    def hbase_write(self, retries: int, failed: bool) -> None:
        if retries:
            self.hbase_retries.inc(retries)
        if failed:
            self.hbase_failures.inc()

    def query_state(self, name: str, active: bool, restarted: bool = False) -> None:
        self.active.labels(name).set(1 if active else 0)
        if restarted:
            self.restarts.labels(name).inc()


class _Clocked:
    """The gauges computed at scrape time."""

    def __init__(self, m: StreamMetrics) -> None:
        self.m = m

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        m = self.m
        now = m.clock()
        with m._lock:
            last, watermark, max_event = dict(m._last), m._watermark_s, m._max_event_s
        age = GaugeMetricFamily("tally_stream_last_progress_age_seconds", "seconds since the "
                                "query's last completed trigger (with or without new data)", labels=["query"])
        for name, at in sorted(last.items()):
            age.add_metric([name], now - at)
        yield age
        if watermark is not None:
            yield GaugeMetricFamily("tally_stream_watermark_timestamp_seconds", "the speed "
                                    "query's watermark (epoch seconds)", value=watermark)
            yield GaugeMetricFamily("tally_stream_watermark_delay_seconds", "wall clock minus the "
                                    "speed query's watermark (negative: ahead of the clock)",
                                    value=now - watermark)
        if max_event is not None:
            yield GaugeMetricFamily("tally_stream_max_event_time_seconds", "the highest event "
                                    "time the speed query has seen (epoch seconds)",
                                    value=max_event)
