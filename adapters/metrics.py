"""Prometheus pieces the jobs share: the build's identity (``tally_build_info``), the streaming
driver's ``/metrics`` server, and the batch runs' push to a Pushgateway.

A run pushes with the Pushgateway's POST (``pushadd``) under the grouping key
``{job="tally-batch", command=..., instance=...}``: only the metrics a push names are replaced,
so ``tally_batch_last_success_timestamp_seconds``, pushed by successful runs only, survives a
failed one. A push that fails is logged and never changes a run's outcome.
"""

from __future__ import annotations

import dataclasses
import platform
import socket
import time
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from adapters import log
from schemas.config import TallyConfig

LOG = log.get("metrics")
PUSH_JOB = "tally-batch"


def build_labels(component: str) -> dict[str, str]:
    from schemas import __version__

    try:
        pyspark = metadata.version("pyspark")
    except metadata.PackageNotFoundError:
        pyspark = ""
    return {"version": __version__, "component": component,
            "python": platform.python_version(), "pyspark": pyspark}


def add_build_info(registry: CollectorRegistry | None, component: str,
                   **gauge_kwargs: Any) -> Gauge:
    """``tally_build_info{version,component,python,pyspark} 1`` in ``registry`` (None: the
    default one)."""
    labels = build_labels(component)
    kwargs = {"registry": registry} if registry is not None else {}
    gauge = Gauge("tally_build_info", "Tally's version and the versions it runs on (always 1)",
                  list(labels), **kwargs, **gauge_kwargs)
    gauge.labels(**labels).set(1)
    return gauge


def serve(registry: CollectorRegistry, host: str, port: int):
    """Serve ``registry`` on http://host:port/metrics from a daemon thread; returns the server
    (``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


@dataclasses.dataclass
class RunMetrics:
    """What one batch command pushes."""

    command: str  # nightly | batch | reprocess | rollback | compact
    outcome: str  # ok | refused | nothing | failed
    seconds: float
    rows_in: int = 0
    rows_out: int = 0
    days_published: int = 0
    days_refused: int = 0
    versions: dict[str, str] = dataclasses.field(default_factory=dict)  # day -> version published


OUTCOMES = ("ok", "refused", "nothing", "failed")


def run_registry(run: RunMetrics, now: float | None = None) -> CollectorRegistry:
    """The registry a run pushes (pure: no I/O)."""
    now = time.time() if now is None else now
    reg = CollectorRegistry()
    add_build_info(reg, "batch")

    def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> None:
        g = Gauge(name, doc, list(labels or {}), registry=reg)
        (g.labels(**labels) if labels else g).set(value)

    gauge("tally_batch_run_duration_seconds", "duration of the last run", run.seconds)
    gauge("tally_batch_last_run_timestamp_seconds", "when the last run ended", now)
    outcome = Gauge("tally_batch_run_outcome", "1 for the last run's outcome: ok, refused (a day "
                    "was not published and needs a person), nothing (nothing to compute), "
                    "failed (the run raised)", ["outcome"], registry=reg)
    for o in OUTCOMES:
        outcome.labels(o).set(1 if o == run.outcome else 0)
    gauge("tally_batch_run_rows_in", "raw rows the last run read", run.rows_in)
    gauge("tally_batch_run_rows_out", "view rows the last run wrote", run.rows_out)
    gauge("tally_batch_run_published", "days the last run published", run.days_published)
    gauge("tally_batch_run_refused", "days the last run refused", run.days_refused)
    if run.versions:
        published = Gauge("tally_batch_published_version_info", "the versions the last run "
                          "published (always 1)", ["day", "version"], registry=reg)
        for day, version in sorted(run.versions.items()):
            published.labels(day, version).set(1)
    if run.outcome in ("ok", "nothing"):
        gauge("tally_batch_last_success_timestamp_seconds", "when the last successful run ended",
              now)
    return reg


def push_run(cfg: TallyConfig, run: RunMetrics) -> bool:
    """Push ``run`` to ``metrics.pushgateway`` when one is configured; True when pushed."""
    url = cfg.metrics.pushgateway
    if not url:
        return False
    from prometheus_client import pushadd_to_gateway

    grouping = {"command": run.command, "instance": cfg.metrics.instance or socket.gethostname()}
    try:
        pushadd_to_gateway(url.rstrip("/"), job=PUSH_JOB, registry=run_registry(run),
                           grouping_key=grouping, timeout=cfg.metrics.push_timeout_s)
    except Exception as exc:  # noqa: BLE001 - monitoring never changes a run's outcome
        log.kv(LOG, 30, "metrics push failed", pushgateway=url, command=run.command,
               error=f"{type(exc).__name__}: {exc}")
        return False
    return True


class Timed:
    """``with Timed(cfg, "rollback") as run: ...; run.outcome = ...`` pushes the run when the
    block ends: ``failed`` when it raised, else whatever the block set (``ok`` by default)."""

    def __init__(self, cfg: TallyConfig, command: str) -> None:
        self.cfg = cfg
        self.run = RunMetrics(command, "ok", 0.0)
        self._t0 = 0.0

    def __enter__(self) -> RunMetrics:
        self._t0 = time.monotonic()
        return self.run

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.run.seconds = time.monotonic() - self._t0
        if exc_type is not None:
            self.run.outcome = "failed"
        push_run(self.cfg, self.run)
        return False
