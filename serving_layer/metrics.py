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

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

REQUESTS = Counter("tally_http_requests_total", "HTTP requests answered",
                   ["method", "endpoint", "status"])
LATENCY = Histogram("tally_http_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
EVENTS = Counter("tally_ingest_events_total", "events received over HTTP", ["outcome"])
VIEW_LOADS = Counter("tally_batch_view_loads_total", "batch views read from the lake into a "
                     "worker's cache", ["granularity"])
SPEED_FAILURES = Counter("tally_speed_read_failures_total", "speed-store reads that failed")


def observe(method: str, endpoint: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, endpoint, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


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
