"""The REST API (CONTRACTS.md section 5): the Flask application factory.

``create_app(cfg)`` builds the app with three blueprints — ingest (``POST /v1/events``), queries
(counts, top-K) and ops (health, readiness, metrics, the OpenAPI document). Per-process resources
(the batch reader and its caches, the HBase pool, the Kafka producer) live in
:class:`serving_layer.service.Resources` and are created lazily on first use, in the worker
process that uses them (gunicorn forks workers before any request; see ``server.py``).

Errors are JSON ``{"error": "..."}``: 4xx naming the bad parameter, 503 with ``Retry-After``
naming the dependency when one needed for the answer is down. Any other 5xx is a defect.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Any

import orjson
from flask import Flask, Response, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from schemas.config import TallyConfig, load_config
from serving_layer.buckets import Buckets
from serving_layer.service import Resources
from tally import log
from tally.errors import ApiError, DependencyError, ProducerError

LOG = log.get("serve")
_RULE_VAR = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")


class AnyText(BaseConverter):
    """A path segment of any characters, newlines and slashes included, even empty."""

    regex = r"(?s:.*?)"
    part_isolating = False


def tally_cfg() -> TallyConfig:
    return current_app.extensions["tally"]["cfg"]


def resources() -> Resources:
    return current_app.extensions["tally"]["resources"]


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    resp = jsonify({"error": message, **extra})
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def client_key() -> str | None:
    return request.headers.get("X-API-Key")


def require_key(always: bool) -> None:
    """401 unless the request carries a configured key (when keys are configured and the
    endpoint needs one: writes always, reads when ``serve.read_requires_key``)."""
    cfg = tally_cfg().serve
    if not cfg.api_keys or not (always or cfg.read_requires_key):
        return
    given = client_key()
    if given is None:
        raise ApiError(401, "X-API-Key: required", {"WWW-Authenticate": "X-API-Key"})
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in cfg.api_keys):
        raise ApiError(401, "X-API-Key: not a valid key", {"WWW-Authenticate": "X-API-Key"})


class OrjsonProvider(DefaultJSONProvider):
    """Response bodies through orjson (C): a 24-hour minute query answers 1,440 buckets, which
    the standard library's encoder takes several milliseconds to write. Keys keep their order."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, Buckets):
            return o.fragment()
        return DefaultJSONProvider.default(o)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=orjson.OPT_NON_STR_KEYS).decode()

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        body = orjson.dumps(obj, default=self.default, option=orjson.OPT_NON_STR_KEYS)
        return self._app.response_class(body + b"\n", mimetype=self.mimetype)


class TallyFlask(Flask):
    json_provider_class = OrjsonProvider


def create_app(cfg: TallyConfig | None = None) -> Flask:
    cfg = cfg or load_config()
    app = TallyFlask("tally.serve")
    app.url_map.converters["any_text"] = AnyText
    app.config["MAX_CONTENT_LENGTH"] = cfg.serve.max_body_bytes
    app.extensions["tally"] = {"cfg": cfg, "resources": Resources(cfg)}

    from serving_layer import metrics
    from serving_layer.ingest import bp as ingest_bp
    from serving_layer.ops import bp as ops_bp
    from serving_layer.queries import bp as queries_bp

    app.register_blueprint(ingest_bp)
    app.register_blueprint(queries_bp)
    app.register_blueprint(ops_bp)
    limiter = metrics.RateLimiter(cfg.serve.rate_limit_per_s, cfg.serve.rate_limit_burst)

    @app.before_request
    def _start() -> Response | None:
        g.t0 = time.monotonic()
        if limiter.enabled and request.path.startswith("/v1/"):
            wait = limiter.take(client_key() or request.remote_addr or "-")
            if wait:
                return error(429, f"rate limit: at most {cfg.serve.rate_limit_per_s:g} requests/s "
                                  f"per key and worker", {"Retry-After": str(max(1, round(wait)))})
        return None

    @app.after_request
    def _finish(resp: Response) -> Response:
        # The OpenAPI form of the route (/v1/videos/{video_id}/counts): one series per endpoint.
        endpoint = (_RULE_VAR.sub(r"{\1}", request.url_rule.rule)
                    if request.url_rule is not None else "unmatched")
        metrics.observe(request.method, endpoint, resp.status_code,
                        time.monotonic() - g.get("t0", time.monotonic()))
        return resp

    @app.errorhandler(ApiError)  # ParamError included
    def _api_error(exc: ApiError) -> Response:
        return error(exc.status, exc.message, exc.headers, **exc.extra)

    @app.errorhandler(DependencyError)
    def _dependency(exc: DependencyError) -> Response:
        LOG.warning("dependency unavailable: %s", exc)
        metrics.BACKEND_ERRORS.labels(exc.dependency).inc()
        return error(503, str(exc), {"Retry-After": "5"}, dependency=exc.dependency)

    @app.errorhandler(ProducerError)
    def _producer(exc: ProducerError) -> Response:
        LOG.warning("kafka did not acknowledge: %s", exc)
        metrics.BACKEND_ERRORS.labels("kafka").inc()
        return error(503, str(exc), {"Retry-After": "5"}, dependency="kafka")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        messages = {
            404: f"{request.path}: no such endpoint (see /openapi.json)",
            405: f"{request.method} {request.path}: method not allowed",
            413: f"body: larger than {cfg.serve.max_body_bytes} bytes",
        }
        # Keep what the exception's own response says beyond its body (405: Allow).
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error(exc.code or 500, messages.get(exc.code or 0, exc.description or exc.name),
                     headers)

    @app.errorhandler(Exception)
    def _defect(exc: Exception) -> Response:
        LOG.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, f"internal error: {type(exc).__name__}")

    return app
