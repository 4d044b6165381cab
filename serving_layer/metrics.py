"""Prometheus metrics (``GET /metrics``) and the rate limiter shared by the workers and instances.

Under ``tally serve`` (several gunicorn workers) the metrics use prometheus-client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set (and emptied) by ``server.py`` before any
worker starts, each worker writes its own files, ``/metrics`` sums them over the live workers.
Without that variable (tests, a single process) the default registry is used.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

from adapters.metrics import add_build_info

REQUESTS = Counter("tally_http_requests_total", "HTTP requests answered",
                   ["method", "endpoint", "status"])
LATENCY = Histogram("tally_http_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
EVENTS = Counter("tally_ingest_events_total", "events received over HTTP", ["outcome"])
VIEW_LOADS = Counter("tally_batch_view_loads_total", "batch views read from the lake into a "
                     "worker's cache", ["granularity"])
# Per worker (a pid label in multiprocess mode): what its batch-view cache holds.
CACHE_BYTES = Gauge("tally_batch_cache_bytes", "bytes of batch views a worker holds in memory",
                    multiprocess_mode="liveall")
CACHE_VIEWS = Gauge("tally_batch_cache_views", "batch views a worker holds in memory",
                    multiprocess_mode="liveall")
SPEED_FAILURES = Counter("tally_speed_read_failures_total", "speed-store reads that failed")
BACKEND_ERRORS = Counter("tally_backend_errors_total", "backend calls that failed",
                         ["dependency"])
BUILD_INFO = add_build_info(None, "api", multiprocess_mode="max")
# Every label value a rate or an alert reads exists from the start (at 0), so "none yet" is a
# series of zeros rather than no series.
for _outcome in ("accepted", "rejected", "failed"):
    EVENTS.labels(_outcome)
for _dependency in ("kafka", "hbase", "lake"):
    BACKEND_ERRORS.labels(_dependency)


class FreshnessCollector:
    """Gauges computed at scrape time by the worker that answers ``/metrics`` (the same in every
    worker, so they need no multiprocess aggregation). ``read`` returns epoch milliseconds of the
    batch horizon, the speed layer's last progress record and its highest event time (None when
    unknown); a failing read leaves the gauges out rather than failing the scrape."""

    GAUGES = (
        ("horizon_ms", "tally_batch_horizon_age_seconds", "seconds between now and the batch horizon"),
        ("speed_updated_ms", "tally_speed_lag_seconds",
         "seconds since the speed layer's last progress record"),
        ("speed_max_event_ms", "tally_speed_event_lag_seconds",
         "seconds between now and the highest event time the speed layer has counted"),
    )

    def __init__(self, read: Callable[[], dict[str, int | None]],
                 clock: Callable[[], float] = time.time) -> None:
        self.read = read
        self.clock = clock

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            values = self.read()
        except Exception:  # noqa: BLE001 - a scrape must answer even with a backend down
            return
        now = self.clock()
        for key, name, doc in self.GAUGES:
            if values.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=now - values[key] / 1000)
        if values.get("pending_days") is not None:
            yield GaugeMetricFamily(
                "tally_batch_pending", "days before the batch horizon whose raw data their "
                "published batch views do not cover yet (answered from both layers meanwhile)",
                value=values["pending_days"])
        if values.get("speed_watermark_ms") is not None:
            # No valid event can move the watermark past the receiving clock (events ahead of it
            # are left out): anything above 0 here is a clock or a pipeline fault.
            yield GaugeMetricFamily(
                "tally_speed_watermark_ahead_seconds",
                "seconds the speed layer's watermark is ahead of the wall clock (0 when behind)",
                value=max(0.0, values["speed_watermark_ms"] / 1000 - now))


def observe(method: str, endpoint: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method_label(method), endpoint, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def render(freshness: FreshnessCollector | None = None) -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    if freshness is not None:
        extra = CollectorRegistry()
        extra.register(freshness)
        data += generate_latest(extra)
    return data, CONTENT_TYPE_LATEST


# Method label values come from this closed set; any other method name (``curl -X FOOBAR``)
# is counted as "other", so a client cannot add series to /metrics.
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


RATE_LIMIT_ERRORS = Counter("tally_rate_limit_errors_total", "rate-limit store operations that "
                            "failed (the request was let through)")


class RateLimiter:
    """Token buckets (GCRA, pyrate-limiter's algorithm: one theoretical arrival time per bucket)
    in one SQLite table, ``<state dir>/run/ratelimit.sqlite``, shared by every worker of every
    `tally serve` of the state dir — the workers of one instance and the instances behind the
    front door alike. ``take(key)`` is one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock
    makes the read-decide-write atomic across processes): 0 when the request may go on, else
    the seconds until it may.

    Keys are the callers' (an authenticated key's digest, or a client address): the app makes a
    bucket only for a valid key or an address, never for what a client merely claims. A bucket
    whose arrival time has passed is exactly a fresh bucket, so removing it (``_collect``, every
    few seconds) forgets nothing; no live bucket is ever removed or reset. When more than
    ``max_buckets`` are live (a flood from that many addresses), NEW address keys share the
    overflow bucket ``overflow_key`` until collection brings the count down: the buckets that
    exist keep their state. A store that cannot be used (disk full, locked beyond the timeout)
    lets the request through and counts ``tally_rate_limit_errors_total``: the limit protects
    capacity, it is no access control."""

    COLLECT_EVERY_S = 5.0

    def __init__(self, path, rate_per_s: float, burst: int, clock=time.time,
                 max_buckets: int = 100_000, overflow_key: str = "a:overflow") -> None:
        self.path = str(path)
        self.rate = rate_per_s
        self.burst = int(burst)
        self.clock = clock
        self.max_buckets = max_buckets
        self.overflow_key = overflow_key
        self._lock = threading.Lock()
        self._conn = None
        self._pid = 0
        self._next_collect = 0.0
        self._live = 0
        if self.enabled:
            from pyrate_limiter import GCRA, Rate

            # Rate(limit, interval_ms) with limit 1000: an emission interval of
            # 1e6 / rate microseconds (GCRA keeps integer microseconds).
            interval_ms = max(1, round(1_000_000 / rate_per_s))
            self._algo = GCRA()
            self._rates = [Rate(1000, interval_ms, burst=self.burst)]
            # A full bucket's span: burst emission intervals (interval_ms * 1000 / 1000 us each).
            self._span_us = self.burst * interval_ms

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _connection(self):
        import sqlite3

        if self._conn is None or self._pid != os.getpid():  # never a connection across a fork
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=2.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")  # the buckets need not survive a crash
            conn.execute("CREATE TABLE IF NOT EXISTS bucket (key TEXT PRIMARY KEY, "
                         "tat INTEGER NOT NULL) WITHOUT ROWID")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def take(self, key: str) -> float:
        try:
            with self._lock:
                return self._take(key)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            import logging

            logging.getLogger("tally.serve").warning("rate limit store %s: %s", self.path, exc)
            RATE_LIMIT_ERRORS.inc()
            self._conn = None
            return 0.0

    def _take(self, key: str) -> float:
        conn = self._connection()
        now_ms = int(self.clock() * 1000)
        if now_ms >= self._next_collect:
            self._collect(conn, now_ms)
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT tat FROM bucket WHERE key = ?", (key,)).fetchone()
            if row is None and self._live >= self.max_buckets and key.startswith("a:"):
                key = self.overflow_key
                row = conn.execute("SELECT tat FROM bucket WHERE key = ?", (key,)).fetchone()
            # A clock stepped back must not hold a bucket empty for longer than a full refill.
            state = (min(row[0], now_ms * 1000 + self._span_us),) if row else \
                self._algo.initial(self._rates)
            new_state, decision = self._algo.step(self._rates, state, now_ms, 1)
            if decision.allowed:
                conn.execute("INSERT INTO bucket (key, tat) VALUES (?, ?) ON CONFLICT (key) "
                             "DO UPDATE SET tat = excluded.tat", (key, int(new_state[0])))
                if row is None:
                    self._live += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if decision.allowed:
            return 0.0
        return max(0.001, (decision.retry_after_ms or 1) / 1000)

    def _collect(self, conn, now_ms: int) -> None:
        """Remove the buckets that are full again (indistinguishable from none); count the rest."""
        conn.execute("DELETE FROM bucket WHERE tat <= ?", (now_ms * 1000,))
        self._live = conn.execute("SELECT count(*) FROM bucket").fetchone()[0]
        self._next_collect = now_ms + self.COLLECT_EVERY_S * 1000

    def buckets(self) -> int:
        """Live buckets (tests, diagnostics)."""
        with self._lock:
            conn = self._connection()
            return conn.execute("SELECT count(*) FROM bucket WHERE tat > ?",
                                (int(self.clock() * 1000) * 1000,)).fetchone()[0]


class RateMeter:
    """Events per second in one worker: the rate of the last whole window, or of the current
    one so far when that is higher (a burst is seen before its window ends)."""

    def __init__(self, window_s: float = 1.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._start = clock()
        self._n = 0
        self._last = 0.0

    def tick(self) -> float:
        """Count one event; the rate with it."""
        now = self.clock()
        elapsed = now - self._start
        if elapsed >= self.window_s:
            # A window with no event in it (a pause longer than one) counts as rate 0.
            self._last = self._n / elapsed if elapsed < 2 * self.window_s else 0.0
            self._start, self._n = now, 0
        self._n += 1
        return max(self._last, self._n / self.window_s)
