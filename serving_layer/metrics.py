"""Prometheus metrics (``GET /metrics``) and the per-key rate limiter.

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
        if values.get("speed_watermark_ms") is not None:
            # No valid event can move the watermark past the receiving clock (events ahead of it
            # are left out): anything above 0 here is a clock or a pipeline fault.
            yield GaugeMetricFamily(
                "tally_speed_watermark_ahead_seconds",
                "seconds the speed layer's watermark is ahead of the wall clock (0 when behind)",
                value=max(0.0, values["speed_watermark_ms"] / 1000 - now))


def observe(method: str, endpoint: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, endpoint, str(status)).inc()
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


class RateLimiter:
    """A token bucket per client key, in one worker process: with W workers a key may get up to
    W times the rate in total (gunicorn spreads connections over workers)."""

    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """0 when the request may go on, else the seconds until a token is available."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                if len(self._buckets) > 100_000:
                    self._buckets.clear()
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


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
