"""Operations endpoints: liveness, readiness (Kafka, HBase, the lake, each named), Prometheus
metrics and the OpenAPI document."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from flask import Blueprint, Response, jsonify

from adapters import log
from schemas.errors import TallyError, describe, public
from serving_layer import metrics
from serving_layer.context import resources, tally_cfg

LOG = log.get("serve")

bp = Blueprint("ops", __name__)


@bp.get("/")
def dashboard():
    from serving_layer.dashboard import PAGE

    # A second defence beside the page's own escaping: nothing loaded or sent elsewhere, no
    # framing (clickjacking), the page's one inline script and style only.
    return Response(PAGE, mimetype="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' "
                                   "data:; base-uri 'none'; form-action 'self'; "
                                   "frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok", "pid": os.getpid()})


def _check_kafka() -> str:
    from kafka import KafkaAdminClient

    cfg = tally_cfg()
    ms = int(min(cfg.serve.kafka_timeout_s, 5) * 1000)
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers, request_timeout_ms=ms,
                             bootstrap_timeout_ms=ms,
                             client_id="tally-serve-ready")
    try:
        topics = admin.list_topics()
    finally:
        admin.close()
    if cfg.kafka.topic not in topics:
        raise RuntimeError(f"topic {cfg.kafka.topic} does not exist")
    return f"topic {cfg.kafka.topic} present"


def _check_hbase() -> str:
    # Read on every call, never cached: a table whose TTL is not the config's would answer 0 for
    # the buckets between the two TTLs (the API flags beyond_retention from the config's).
    return resources().speed.check()


def _check_lake() -> str:
    from serving_layer.batch import _lake

    reader = resources().batch
    reader.check_root()
    n = _lake("listing the publication log", reader.views.log_entries)
    uri = reader.views.store.uri
    return f"{'file lake' if uri.startswith('file://') else uri}: {n} publication entries"


CHECKS: dict[str, Callable[[], str]] = {"kafka": _check_kafka, "hbase": _check_hbase,
                                        "lake": _check_lake}


@bp.get("/readyz")
def readyz():
    out: dict[str, Any] = {}
    ok = True
    for name, check in CHECKS.items():
        t0 = time.monotonic()
        try:
            out[name] = {"ready": True, "detail": check()}
        except Exception as exc:  # noqa: BLE001 - any failure makes the part not ready
            ok = False
            LOG.warning("not ready: %s: %s: %s", name, type(exc).__name__, exc)
            out[name] = {"ready": False, "detail": public(str(exc)) if isinstance(exc, TallyError)
                         else describe(exc)}
        out[name]["seconds"] = round(time.monotonic() - t0, 3)
    body = {"ready": ok, "dependencies": out}
    if ok:
        return jsonify(body)
    down = [n for n, v in out.items() if not v["ready"]]
    return jsonify({**body, "error": f"not ready: {', '.join(down)} unavailable"}), 503, \
        {"Retry-After": "5"}


def _freshness_ms() -> dict[str, int | None]:
    res = resources()
    state = res.batch.snapshot().state
    out: dict[str, int | None] = {"horizon_ms": state.horizon_ms, "pending_days": sum(
        1 for day in set(state.published) | set(state.index.days) if state.pending(day))}
    try:
        p = res.speed.progress()
    except Exception:  # noqa: BLE001 - HBase down: the horizon is still worth reporting
        metrics.BACKEND_ERRORS.labels("hbase").inc()
        return out
    out["speed_updated_ms"] = p.updated_at_ms if p else None
    out["speed_max_event_ms"] = p.max_event_time_ms if p else None
    out["speed_watermark_ms"] = p.watermark_ms if p else None
    return out


@bp.get("/metrics")
def get_metrics():
    data, ctype = metrics.render(metrics.FreshnessCollector(_freshness_ms))
    return Response(data, mimetype=ctype.split(";")[0], content_type=ctype)


@bp.get("/openapi.json")
def openapi():
    from serving_layer.openapi import document

    return jsonify(document(tally_cfg()))
