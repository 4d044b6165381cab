"""The OpenAPI 3.1 document of what the app really serves (``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from schemas.config import TallyConfig
from serving_layer.params import MAX_K


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document(cfg: TallyConfig) -> dict[str, Any]:
    s = cfg.serve
    time_param = {"type": "string", "description": "RFC 3339 with an offset, or epoch milliseconds"}
    unavailable = _err("a dependency needed for the answer is down (named in `dependency`); "
                       "see Retry-After")
    unavailable["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    auth_read = [{"apiKey": []}] if s.api_keys and s.read_requires_key else []
    auth_write = [{"apiKey": []}] if s.api_keys else []
    freshness = {"type": "object", "properties": {
        "speed_max_event_time": {"type": ["string", "null"], "format": "date-time"},
        "speed_watermark": {"type": ["string", "null"], "format": "date-time"},
        "speed_updated_at": {"type": ["string", "null"], "format": "date-time"},
        "lag_seconds": {"type": ["number", "null"],
                        "description": "server clock minus speed_max_event_time"},
        "dropped_late": {"type": ["integer", "null"],
                         "description": "events the speed layer dropped as late (cumulative)"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tally", "version": "1",
                 "description": "Exact and fresh event counts: batch views before the batch "
                                "horizon, speed views from it on."},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "dependency": {"type": "string"}}},
                "Freshness": freshness,
            },
        },
        "paths": {
            "/v1/events": {"post": {
                "summary": "ingest one event or an array of events",
                "security": auth_write,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [{"type": "object"},
                              {"type": "array", "items": {"type": "object"}, "minItems": 1,
                               "maxItems": s.max_events}]}}},
                    "description": f"at most {s.max_body_bytes} bytes"},
                "responses": {
                    "202": {"description": "every accepted event is acknowledged by Kafka",
                            "content": {"application/json": {"schema": {"type": "object",
                                "properties": {"accepted": {"type": "integer"},
                                               "rejected": {"type": "array", "items": {
                                                   "type": "object", "properties": {
                                                       "index": {"type": "integer"},
                                                       "error": {"type": "string"}}}}}}}}},
                    "400": _err("not JSON, or no valid event (then `rejected` lists why)"),
                    "401": _err("no valid X-API-Key"),
                    "413": _err(f"body over {s.max_body_bytes} bytes or over {s.max_events} events"),
                    "429": _err("rate limit"),
                    "503": unavailable}}},
            "/v1/videos/{video_id}/counts": {"get": {
                "summary": "merged counts of one video and event type per bucket",
                "security": auth_read,
                "parameters": [
                    {"name": "video_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}},
                    {"name": "event_type", "in": "query",
                     "schema": {"type": "string", "enum": list(cfg.events.types), "default": "view"}},
                    {"name": "from", "in": "query", "required": True, "schema": time_param,
                     "description": "floored to the granularity"},
                    {"name": "to", "in": "query", "required": True, "schema": time_param,
                     "description": "ceiled to the granularity (exclusive)"},
                    {"name": "granularity", "in": "query", "schema": {
                        "type": "string", "enum": ["minute", "hour", "day"], "default": "hour"},
                     "description": f"ranges up to {s.max_range_days_minute} days at minute, "
                                    f"{s.max_range_days} days at hour and day"}],
                "responses": {
                    "200": {"description": "every bucket of the range, zeros included; buckets "
                                           "before batch_horizon from the batch views, the rest "
                                           "from the speed views. With the speed store down the "
                                           "batch part is still answered: speed_unavailable and "
                                           "partial are true and speed buckets have count null "
                                           "and unavailable true. Speed buckets older than the "
                                           "speed TTL carry beyond_retention true.",
                            "content": {"application/json": {"schema": {"type": "object",
                                "properties": {
                                    "video_id": {"type": "string"},
                                    "event_type": {"type": "string"},
                                    "granularity": {"type": "string"},
                                    "from": {"type": "string", "format": "date-time"},
                                    "to": {"type": "string", "format": "date-time"},
                                    "total": {"type": "integer"},
                                    "watch_ms": {"type": "integer"},
                                    "buckets": {"type": "array", "items": {"type": "object",
                                        "properties": {
                                            "start": {"type": "string", "format": "date-time"},
                                            "count": {"type": ["integer", "null"]},
                                            "watch_ms": {"type": ["integer", "null"]},
                                            "source": {"enum": ["batch", "speed"]},
                                            "unavailable": {"type": "boolean"},
                                            "beyond_retention": {"type": "boolean"}}}},
                                    "batch_horizon": {"type": ["string", "null"],
                                                      "format": "date-time"},
                                    "batch_versions": {"type": "object",
                                                       "additionalProperties": {"type": "string"}},
                                    "freshness": {"$ref": "#/components/schemas/Freshness"},
                                    "speed_unavailable": {"type": "boolean"},
                                    "partial": {"type": "boolean"},
                                    "warnings": {"type": "array", "items": {"type": "string"}}}}}}},
                    "400": _err("a bad parameter, named"), "401": _err("no valid X-API-Key"),
                    "429": _err("rate limit"), "503": unavailable}}},
            "/v1/top": {"get": {
                "summary": "the k videos with the most events of a type in a range",
                "security": auth_read,
                "parameters": [
                    {"name": "event_type", "in": "query",
                     "schema": {"type": "string", "enum": list(cfg.events.types), "default": "view"}},
                    {"name": "from", "in": "query", "required": True, "schema": time_param,
                     "description": "floored to the minute"},
                    {"name": "to", "in": "query", "required": True, "schema": time_param,
                     "description": "ceiled to the minute (exclusive)"},
                    {"name": "k", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}}],
                "responses": {
                    "200": {"description": "most events first, ties by video_id; exact is true "
                                           "only when the whole range lies before the batch "
                                           "horizon",
                            "content": {"application/json": {"schema": {"type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": {"type": "object",
                                        "properties": {"video_id": {"type": "string"},
                                                       "count": {"type": "integer"},
                                                       "watch_ms": {"type": "integer"}}}},
                                    "exact": {"type": "boolean"},
                                    "batch_horizon": {"type": ["string", "null"]},
                                    "batch_versions": {"type": "object"},
                                    "sources": {"type": "object"},
                                    "freshness": {"$ref": "#/components/schemas/Freshness"},
                                    "speed_unavailable": {"type": "boolean"}}}}}},
                    "400": _err("a bad parameter, named"), "401": _err("no valid X-API-Key"),
                    "429": _err("rate limit"), "503": unavailable}}},
            "/": {"get": {"summary": "the dashboard page (HTML)",
                          "responses": {"200": {"description": "text/html"}}}},
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "up"}}}},
            "/readyz": {"get": {"summary": "readiness of kafka, hbase and the lake, each named",
                                "responses": {"200": {"description": "all ready"},
                                              "503": unavailable}}},
            "/metrics": {"get": {"summary": "Prometheus text format",
                                 "responses": {"200": {"description": "metrics"}}}},
            "/openapi.json": {"get": {"summary": "this document",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
    }
