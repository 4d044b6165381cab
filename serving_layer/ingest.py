"""``POST /v1/events``: one event or an array, validated with the contract's validator against
the server clock, the valid ones sent through the producer; answered 202 only once Kafka has
acknowledged every accepted event (a flush of this request's sends). A Kafka failure is 503 with
``Retry-After``: the client retries the whole request, and the copies that did reach Kafka are
removed downstream by ``event_id``."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request

from schemas.event import EventValidator, loads_strict, to_json
from serving_layer import metrics
from serving_layer.app import require_key, resources, tally_cfg
from tally.errors import ApiError, ProducerError

bp = Blueprint("ingest", __name__)


def _validator() -> EventValidator:
    ext = current_app.extensions["tally"]
    if "validator" not in ext:
        ext["validator"] = EventValidator.from_config(ext["cfg"])
    return ext["validator"]


@bp.post("/v1/events")
def post_events() -> tuple[Response, int]:
    require_key(always=True)
    cfg = tally_cfg()
    raw = request.get_data(cache=False)  # 413 past serve.max_body_bytes (MAX_CONTENT_LENGTH)
    try:
        body = loads_strict(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "body: not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise ApiError(400, "body: not valid JSON (one event object or an array of them)") from None
    events = body if isinstance(body, list) else [body]
    if len(events) > cfg.serve.max_events:
        raise ApiError(413, f"body: at most {cfg.serve.max_events} events per request, "
                            f"got {len(events)}")
    if not events:
        raise ApiError(400, "body: holds no event")
    clock = int(time.time() * 1000)
    good, bad = _validator().partition(events, clock)
    rejected = [{"index": i, "error": reason} for i, reason in bad]
    metrics.EVENTS.labels("rejected").inc(len(bad))
    if not good:
        raise ApiError(400, "body: holds no valid event", rejected=rejected)
    res = resources()
    producer = res.producer()  # DependencyError (503, kafka) when it cannot connect
    try:
        for i, event in good:
            producer.send_raw(to_json(events[i]), event["video_id"].encode("ascii"))
        producer.flush(timeout_s=cfg.serve.kafka_timeout_s)
    except ProducerError:
        res.drop_producer()
        raise
    metrics.EVENTS.labels("accepted").inc(len(good))
    return jsonify({"accepted": len(good), "rejected": rejected}), 202
