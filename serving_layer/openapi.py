"""The OpenAPI 3.1 document of what the app really serves (``GET /openapi.json``).

Response bodies are closed (``additionalProperties: false``) and list what is always present
as ``required``, so a field the app adds or drops without this document saying so fails the
schema test (tests/integration/test_serving_schema.py).

The event (``components.schemas.Event``) is derived from the contract's one definition,
:data:`schemas.event.FIELDS`, and never stricter than its validator: what the schema refuses the
validator refuses too (tests/unit/test_openapi.py). Some rules are beyond JSON Schema (``ts`` at
most ``events.max_future_ms`` after the server's clock and not before 2000 as a string, the JSON
limits, integers written without a fraction); the descriptions state them.
"""

from __future__ import annotations

from typing import Any

from schemas.config import TallyConfig
from schemas.event import (FIELDS, INT64_MAX, MAX_DEPTH, MAX_KEY_CHARS, MAX_NUMBER_CHARS, MIN_TS_MS,
                           RFC3339, RULE_REQUIRED, RULE_TS_BEFORE, RULE_TS_FORMAT, Field, rule_enum,
                           rule_max_len, rule_pattern, rule_range, rule_ts_future)
from serving_layer.params import MAX_K

DATE_TIME = {"type": "string", "format": "date-time"}
DATE_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}


def _closed(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties,
            "additionalProperties": False}


def _json(schema: dict[str, Any], desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _err(desc: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, desc)


def _retry_after(resp: dict[str, Any]) -> dict[str, Any]:
    return {**resp, "headers": {"Retry-After": {"required": True,
                                                "schema": {"type": "string", "pattern": "^[0-9]+$"},
                                                "description": "seconds"}}}


# The tags, in the order a reader meets them; every operation carries one.
TAGS = [
    {"name": "ingest", "description": "Sending events (CONTRACTS.md section 1)."},
    {"name": "counts", "description": "Merged counts of one video per minute, hour or day: "
                                      "batch views before the batch horizon, speed views after."},
    {"name": "top", "description": "The videos with the most events of a type in a range."},
    {"name": "dashboard", "description": "The page for people; it uses only this API."},
    {"name": "ops", "description": "Liveness, readiness, metrics and this document: no key, no "
                                   "rate limit."},
]


def _field_schema(f: Field, cfg: TallyConfig) -> dict[str, Any]:
    """The JSON Schema of one field of the contract: its kind and rule, and (as the description)
    the rule in the words the validator answers with."""
    rules = [RULE_REQUIRED] if f.required else ["optional; null is the same as absent"]
    if f.kind == "string":
        s: dict[str, Any] = {"type": "string", "maxLength": f.max_len}
        if f.pattern:
            s.update(minLength=1, pattern=f"^{f.pattern}{{1,{f.max_len}}}$")
            rules.append(rule_pattern(f))
        else:
            rules.append(rule_max_len(f))
        if f.enum:
            s["enum"] = list(cfg.events.types)
            rules.append(rule_enum(cfg.events.types))
    elif f.kind == "integer":
        s = {"type": "integer", "minimum": f.minimum, "maximum": f.maximum}
        rules.append(rule_range(f) + " (a JSON integer, written without a fraction or exponent)")
    elif f.kind == "timestamp":
        s = {"anyOf": [{"type": "string", "format": "date-time", "pattern": f"^{RFC3339}$"},
                       {"type": "integer", "minimum": MIN_TS_MS, "maximum": INT64_MAX}]}
        rules += [RULE_TS_FORMAT + " (an integer written without a fraction or exponent)",
                  RULE_TS_BEFORE, rule_ts_future(cfg.events.max_future_ms) + " (the server's)"]
    else:  # a kind the contract gained and this document does not know yet
        raise ValueError(f"{f.name}: no JSON Schema for the field kind {f.kind!r}")
    if not f.required:  # JSON null stands for an absent field
        if "anyOf" in s:
            s["anyOf"].append({"type": "null"})
        else:
            s["type"] = [s["type"], "null"]
            if "enum" in s:
                s["enum"].append(None)
    if f.default is not None:
        s["default"] = f.default
    return {**s, "description": "; ".join(rules)}


def event_schema(cfg: TallyConfig) -> dict[str, Any]:
    """``components.schemas.Event``: one event as :data:`schemas.event.FIELDS` defines it."""
    return {
        "type": "object",
        "required": [f.name for f in FIELDS if f.required],
        "properties": {f.name: _field_schema(f, cfg) for f in FIELDS},
        "propertyNames": {"maxLength": MAX_KEY_CHARS},
        "description": "One event (CONTRACTS.md section 1). Other fields are allowed and kept, "
                       "with the whole original JSON, in the raw archive. An event is JSON "
                       f"within limits: number literals of at most {MAX_NUMBER_CHARS} "
                       f"characters, keys of at most {MAX_KEY_CHARS}, nesting depth at most "
                       f"{MAX_DEPTH}, no duplicate keys, no lone surrogates; breaking one is "
                       "`event: not valid JSON`. A rejected event is answered with "
                       "`<field>: <rule>`, the first broken rule in field order."}


def document(cfg: TallyConfig) -> dict[str, Any]:
    s = cfg.serve
    time_param = {
        "anyOf": [DATE_TIME, {"type": "string", "pattern": "^[0-9]{1,16}$",
                              "description": "epoch milliseconds"}],
        "description": "RFC 3339 with an offset, or epoch milliseconds; from "
                       "2000-01-01T00:00:00Z to 9999-12-31T00:00:00Z"}
    unavailable = _retry_after(_err("a dependency needed for the answer is down (named in "
                                    "`dependency`); see Retry-After"))
    limited = _retry_after(_err("rate limit: serve.rate_limit_per_s per API key (or client "
                                "address without one), shared by every worker; see Retry-After"))
    auth_read = [{"apiKey": []}] if s.api_keys and s.read_requires_key else []
    auth_write = [{"apiKey": []}] if s.api_keys else []
    event_type = {"name": "event_type", "in": "query",
                  "schema": {"type": "string", "enum": list(cfg.events.types), "default": "view"}}
    versions = {"type": "object", "additionalProperties": {"type": ["string", "null"]},
                "description": "the batch version used per UTC day; null for a day without a "
                               "published view (no raw data, or before batch.horizon_start)"}
    day_list = {"type": "array", "items": {"type": "string", "format": "date"}}
    pending = {**day_list, "description": "the pending days of the range used (raw data their "
                                          "batch views do not cover yet), ascending"}
    pinned = {**day_list, "description": "the rolled-back (pinned) days of the range used"}
    speed_unavailable = {"type": "boolean", "description": "the speed store could not be read"}
    warnings = {"type": "array", "items": {"type": "string"}}
    bucket = _closed(
        ["start", "count", "watch_ms", "source"],
        start=DATE_TIME, count={"type": ["integer", "null"], "minimum": 0},
        watch_ms={"type": ["integer", "null"], "minimum": 0},
        source={"enum": ["batch", "speed", "none"]}, unavailable={"const": True},
        beyond_retention={"const": True})
    counts = _closed(
        ["video_id", "event_type", "granularity", "from", "to", "total", "watch_ms", "buckets",
         "batch_horizon", "batch_versions", "pending_days", "pinned_days", "freshness",
         "speed_unavailable"],
        video_id={"type": "string"}, event_type={"type": "string"},
        granularity={"enum": ["minute", "hour", "day"]}, **{"from": DATE_TIME, "to": DATE_TIME},
        total={"type": "integer", "minimum": 0}, watch_ms={"type": "integer", "minimum": 0},
        buckets={"type": "array", "items": bucket}, batch_horizon=DATE_TIME_OR_NULL,
        batch_versions=versions, pending_days=pending, pinned_days=pinned,
        freshness={"$ref": "#/components/schemas/Freshness"},
        speed_unavailable=speed_unavailable, partial={"const": True}, warnings=warnings)
    part = {"type": "array", "items": _closed(["from", "to"], **{"from": DATE_TIME, "to": DATE_TIME})}
    top = _closed(
        ["event_type", "from", "to", "k", "items", "exact", "batch_horizon", "batch_versions",
         "pending_days", "pinned_days", "sources", "freshness", "speed_unavailable"],
        event_type={"type": "string"}, **{"from": DATE_TIME, "to": DATE_TIME},
        k={"type": "integer", "minimum": 1, "maximum": MAX_K},
        items={"type": "array", "maxItems": MAX_K, "items": _closed(
            ["video_id", "count", "watch_ms"], video_id={"type": "string"},
            count={"type": "integer", "minimum": 1}, watch_ms={"type": "integer", "minimum": 0})},
        exact={"type": "boolean"}, batch_horizon=DATE_TIME_OR_NULL, batch_versions=versions,
        pending_days=pending, pinned_days=pinned,
        sources=_closed(["batch", "speed", "none"], batch=part, speed=part, none=part),
        freshness={"$ref": "#/components/schemas/Freshness"},
        speed_unavailable=speed_unavailable, partial={"const": True}, warnings=warnings,
        beyond_retention={"const": True})
    freshness = _closed(
        ["speed_max_event_time", "speed_watermark", "speed_updated_at", "lag_seconds",
         "dropped_late"],
        speed_max_event_time=DATE_TIME_OR_NULL, speed_watermark=DATE_TIME_OR_NULL,
        speed_updated_at=DATE_TIME_OR_NULL,
        lag_seconds={"type": ["number", "null"], "description": "server clock minus "
                                                                "speed_max_event_time"},
        dropped_late={"type": ["integer", "null"],
                      "description": "events the speed layer dropped as late (cumulative)"})
    rejected = {"type": "array", "items": _closed(["index", "error"], index={"type": "integer"},
                                                  error={"type": "string"})}
    readiness = _closed(
        ["ready", "dependencies"], ready={"type": "boolean"}, error={"type": "string"},
        dependencies={"type": "object", "additionalProperties": _closed(
            ["ready", "detail", "seconds"], ready={"type": "boolean"},
            detail={"type": "string"}, seconds={"type": "number"})})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tally", "version": "1",
                 "description": "Exact and fresh event counts: batch views before the batch "
                                "horizon, speed views from it on. Errors are JSON "
                                "{\"error\": \"<parameter>: <rule>\"}; the one 5xx is 503 with "
                                "Retry-After naming the dependency. Every endpoint but /healthz and "
                                "/readyz answers 400 to a Host header that does not name this "
                                "server (serve.allowed_hosts)."},
        "tags": [dict(t) for t in TAGS],
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": _closed(["error"], error={"type": "string"},
                                 dependency={"enum": ["kafka", "hbase", "lake"]},
                                 rejected=rejected),
                "Freshness": freshness,
                "Event": event_schema(cfg),
            },
        },
        "paths": {
            "/v1/events": {"post": {
                "operationId": "ingestEvents", "tags": ["ingest"],
                "summary": "ingest one event or an array of events (CONTRACTS.md section 1); "
                           "answered once Kafka acknowledged every accepted one",
                "security": auth_write,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"type": "array", "minItems": 1, "maxItems": s.max_events,
                         "contains": {"$ref": "#/components/schemas/Event"},
                         "items": {"description": "an event (components.schemas.Event), "
                                                  "judged by itself: one that breaks the "
                                                  "contract is answered in `rejected` (its "
                                                  "index and reason) and the others are "
                                                  "accepted"},
                         "description": "at least one valid Event: an array holding none is "
                                        "a 400 listing every reason in `rejected`"}]}}},
                    "description": f"one event, or an array of 1 to {s.max_events} events; at "
                                   f"most {s.max_body_bytes} bytes"},
                "responses": {
                    "202": _json(_closed(["accepted", "rejected"],
                                         accepted={"type": "integer", "minimum": 1},
                                         rejected=rejected),
                                 "every accepted event is acknowledged by Kafka; `rejected` "
                                 "lists the others with the reason"),
                    "400": _err("not JSON, or no valid event (then `rejected` lists why)"),
                    "401": _err("no valid X-API-Key"),
                    "415": _err("the body is not declared Content-Type: application/json"),
                    "413": _err(f"body over {s.max_body_bytes} bytes or over {s.max_events} events"),
                    "429": limited,
                    "503": unavailable}}},
            "/v1/videos/{video_id}/counts": {"get": {
                "operationId": "getVideoCounts", "tags": ["counts"],
                "summary": "merged counts of one video and event type per bucket",
                "security": auth_read,
                "parameters": [
                    {"name": "video_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}},
                    event_type,
                    {"name": "from", "in": "query", "required": True, "schema": time_param,
                     "description": "floored to the granularity", "example": "2026-11-26T00:00:00Z"},
                    {"name": "to", "in": "query", "required": True, "schema": time_param,
                     "description": "ceiled to the granularity (exclusive)",
                     "example": "2026-11-27T12:00:00Z"},
                    {"name": "granularity", "in": "query", "schema": {
                        "type": "string", "enum": ["minute", "hour", "day"], "default": "hour"},
                     "description": f"ranges up to {s.max_range_days_minute} days at minute, "
                                    f"{s.max_range_days} days at hour and day"}],
                "responses": {
                    "200": _json(counts, "every bucket of the range, zeros included; buckets "
                                         "before batch_horizon from the batch views, the rest "
                                         "from the speed views. With the speed store down the "
                                         "batch part is still answered: speed_unavailable and "
                                         "partial are true and speed buckets have count null "
                                         "and unavailable true. Speed buckets older than the "
                                         "speed TTL carry beyond_retention true."),
                    "400": _err("a bad parameter, named"), "401": _err("no valid X-API-Key"),
                    "429": limited, "503": unavailable}}},
            "/v1/top": {"get": {
                "operationId": "getTop", "tags": ["top"],
                "summary": "the k videos with the most events of a type in a range",
                "security": auth_read,
                "parameters": [
                    event_type,
                    {"name": "from", "in": "query", "required": True, "schema": time_param,
                     "description": "floored to the minute", "example": "2026-11-26T00:00:00Z"},
                    {"name": "to", "in": "query", "required": True, "schema": time_param,
                     "description": "ceiled to the minute (exclusive); the range spans at most "
                                    f"{s.max_range_days} days", "example": "2026-11-27T12:00:00Z"},
                    {"name": "k", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}}],
                "responses": {
                    "200": _json(top, "most events first, ties by video_id; exact is true only "
                                      "when the whole range lies before the batch horizon"),
                    "400": _err("a bad parameter, named"), "401": _err("no valid X-API-Key"),
                    "429": limited, "503": unavailable}}},
            "/": {"get": {"operationId": "getDashboard", "tags": ["dashboard"],
                          "summary": "the dashboard page; it uses only this API",
                          "responses": {"200": {"description": "the page", "content": {
                              "text/html": {"schema": {"type": "string"}}}}}}},
            "/healthz": {"get": {"operationId": "getHealth", "tags": ["ops"],
                                 "summary": "liveness", "responses": {"200": _json(
                _closed(["status", "pid"], status={"const": "ok"}, pid={"type": "integer"}),
                "this worker is up")}}},
            "/readyz": {"get": {"operationId": "getReadiness", "tags": ["ops"],
                                "summary": "readiness of kafka, hbase and the lake, each named",
                                "responses": {"200": _json(readiness, "all ready"),
                                              "503": _retry_after(_json(
                                                  readiness, "not ready: `error` names the "
                                                             "dependencies that are down"))}}},
            "/metrics": {"get": {"operationId": "getMetrics", "tags": ["ops"],
                                 "summary": "Prometheus text format (summed over the workers)",
                                 "responses": {"200": {"description": "metrics", "content": {
                                     "text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "getOpenApi", "tags": ["ops"],
                                      "summary": "this document",
                                      "responses": {"200": _json({"type": "object"},
                                                                 "OpenAPI 3.1")}}},
        },
    }
