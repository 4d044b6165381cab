"""``POST /v1/events``: one event or an array, validated with the contract's validator against
the server clock, the valid ones sent through the producer; answered 202 only once Kafka has
acknowledged every accepted event (a flush of this request's sends). The body must be declared
``Content-Type: application/json`` (415 otherwise: see :func:`check_content_type`). A Kafka failure is 503 with
``Retry-After``: the client retries the whole request, and the copies that did reach Kafka are
removed downstream by ``event_id``.

The body is read by the contract's own JSON reader (:func:`schemas.event.loads_batch`): a body
that is not JSON, or is nested deeper than ``MAX_BODY_DEPTH``, is a 400 for the body; every other
JSON limit (number and key lengths, nesting, lone surrogates, duplicate keys) is decided per
event, as the stream decides it for the record that event becomes, so one bad event of an array
is rejected alone. Every accepted event is serialized before any is sent: an event that cannot be
(which the validator should make impossible) is a 400 naming it, and nothing is sent."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request

from schemas.errors import ApiError, ProducerError
from schemas.event import MAX_BODY_DEPTH, EventValidator, loads_batch, reason, to_json
from serving_layer import metrics
from serving_layer.context import resources, tally_cfg

bp = Blueprint("ingest", __name__)

RULE_SERIALIZE = "could not be serialized as JSON"


def _validator() -> EventValidator:
    ext = current_app.extensions["tally"]
    if "validator" not in ext:
        ext["validator"] = EventValidator.from_config(ext["cfg"])
    return ext["validator"]


RULE_CONTENT_TYPE = "must be application/json (a charset parameter, if any, utf-8)"


def check_content_type() -> None:
    """415 unless the body is declared JSON. A web page can make the operator's browser send a
    ``text/plain`` (or form) body anywhere without asking; ``application/json`` needs a CORS
    preflight, which this API never answers: no page can post events."""
    options = request.mimetype_params
    if (request.mimetype != "application/json" or set(options) - {"charset"}
            or options.get("charset", "utf-8").lower() not in ("utf-8", "utf8")):
        given = request.headers.get("Content-Type")
        raise ApiError(415, f"Content-Type: {RULE_CONTENT_TYPE}, got "
                            f"{given[:100] if given is not None else 'none'!r}")


@bp.post("/v1/events")
def post_events() -> tuple[Response, int]:
    check_content_type()
    cfg = tally_cfg()
    raw = request.get_data(cache=False)  # 413 past serve.max_body_bytes (MAX_CONTENT_LENGTH)
    try:
        batch = loads_batch(raw.decode("utf-8"), MAX_BODY_DEPTH)
    except UnicodeDecodeError:
        raise ApiError(400, "body: not valid UTF-8") from None
    except ValueError:
        raise ApiError(400, "body: not valid JSON (one event object or an array of them)") from None
    events = batch.events
    if len(events) > cfg.serve.max_events:
        raise ApiError(413, f"body: at most {cfg.serve.max_events} events per request, "
                            f"got {len(events)}")
    if not events:
        raise ApiError(400, "body: holds no event")
    clock = int(time.time() * 1000)
    good, bad = _validator().partition(events, clock, batch.json_ok)
    rejected = [{"index": i, "error": why} for i, why in bad]
    if not good:
        metrics.EVENTS.labels("rejected").inc(len(bad))
        raise ApiError(400, "body: holds no valid event", rejected=rejected)
    # All of them serialized before the first is sent: a failure then sends nothing.
    messages = []
    for i, event in good:
        try:
            messages.append((to_json(events[i]), event["video_id"].encode("ascii")))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # UnicodeError too
            metrics.EVENTS.labels("rejected").inc(len(events))
            why = reason("event", RULE_SERIALIZE)
            raise ApiError(400, f"body: event {i} {RULE_SERIALIZE} ({type(exc).__name__}); "
                                "no event was sent",
                           rejected=sorted(rejected + [{"index": i, "error": why}],
                                           key=lambda r: r["index"])) from None
    metrics.EVENTS.labels("rejected").inc(len(bad))
    res = resources()
    producer = res.producer()  # DependencyError (503, kafka) when it cannot connect
    try:
        for value, key in messages:
            producer.send_raw(value, key)
        producer.flush(timeout_s=cfg.serve.kafka_timeout_s)
    except ProducerError:
        # Valid events Kafka did not acknowledge: the client is answered 503 and must retry.
        metrics.EVENTS.labels("failed").inc(len(good))
        res.drop_producer()
        raise
    metrics.EVENTS.labels("accepted").inc(len(good))
    return jsonify({"accepted": len(good), "rejected": rejected}), 202
