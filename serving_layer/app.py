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

import hashlib
import hmac
import ipaddress
import math
import os
import re
import time
from typing import Any

import orjson
from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from adapters import log
from schemas.config import TallyConfig, load_config
from schemas.errors import ApiError, DependencyError, ProducerError, public
from serving_layer import access
from serving_layer.buckets import Buckets
from serving_layer.context import client_key, error, proxy_token_path, rate_limit_path, tally_cfg
from serving_layer.service import Resources

LOG = log.get("serve")
_RULE_VAR = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")


class AnyText(BaseConverter):
    """A path segment of any characters, newlines and slashes included, even empty."""

    regex = r"(?s:.*?)"
    part_isolating = False


# Endpoints that always need a key when keys are configured (the others only with
# serve.read_requires_key).
WRITE_ENDPOINTS = frozenset({"ingest.post_events"})
# Probes answer whatever Host they are sent (a balancer's health check names the target's
# address); they carry no data.
PROBES = frozenset({"/healthz", "/readyz"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
FRONT_HEADER = "X-Tally-Front"


def _host_name(value: str) -> str | None:
    """The name of a Host header value (``[::1]:8000`` -> ``::1``), lower case; None when it is
    not a host[:port]."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, sep, port = value.partition(":")
        if sep and not port.isdigit():
            return None
    name = name[:-1] if name.endswith(".") else name
    return name or None


def allowed_host_names(cfg: TallyConfig) -> frozenset[str] | None:
    """The names a request's Host may give (None: any): the loopback names, the addresses
    `tally serve` and the front door bind (unless a wildcard) and ``serve.allowed_hosts``."""
    names = set(LOOPBACK_NAMES)
    for bind in (cfg.serve.host, cfg.front.host):
        if bind.strip("[]").lower() not in WILDCARD_BINDS:
            names.add(bind.strip("[]").lower())
    for name in cfg.serve.allowed_hosts:
        if name == "*":
            return None
        names.add(name.strip("[]").lower().rstrip("."))
    return frozenset(names)


def check_host(allowed: frozenset[str] | None) -> None:
    """400 unless the Host header names this server: a web page that resolved its own name to
    127.0.0.1 (DNS rebinding) sends its own name."""
    if allowed is None or request.path in PROBES:
        return
    given = request.headers.get("Host")
    if given is None:
        raise ApiError(400, "Host: required")
    name = _host_name(given)
    if name is None or name not in allowed:
        raise ApiError(400, f"Host: {given[:100]!r} is not a name of this server "
                            "(serve.allowed_hosts)")


class ProxyToken:
    """The front door's proof (``<state>/front/proxy-token``, written by `tally front up`,
    mode 0600): nginx sends it in ``X-Tally-Front`` with ``X-Forwarded-For`` set to the
    client's address; no other client knows it, so only then is that header believed."""

    def __init__(self, path) -> None:
        self.path = path
        self._seen: tuple[float, bytes] | None = None

    def matches(self, given: str) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime
            if self._seen is None or self._seen[0] != mtime:
                self._seen = (mtime, self.path.read_bytes().strip())
        except OSError:
            return False
        token = self._seen[1]
        return bool(token) and hmac.compare_digest(given.encode(), token)


def client_address(proxy: ProxyToken) -> str:
    """The client's address: the peer's, or behind the front door (its token sent) the one
    nginx put in X-Forwarded-For. An IPv6 address stands for its /64 (one host's share)."""
    addr = request.remote_addr or "-"
    token = request.headers.get(FRONT_HEADER)
    if token is not None and proxy.matches(token):
        forwarded = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
        addr = forwarded or addr
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def key_buckets(api_keys) -> dict[bytes, str]:
    """Each configured key and its rate-limit key (a digest: the key itself is never stored)."""
    return {k.encode(): "k:" + hashlib.sha256(k.encode()).hexdigest()[:24] for k in api_keys}


def authenticate(keys: dict[bytes, str], proxy: ProxyToken) -> str:
    """The one key check, before every ``/v1/`` view; returns the caller as a rate-limit key:
    the valid key's (``key_buckets``), or ``a:<address>`` without one. With keys configured a
    key that is not valid is a 401 on every endpoint (no bucket is made for it), and a missing
    one where the endpoint needs one (writes always, reads with ``serve.read_requires_key``);
    without keys configured the header is ignored."""
    given = client_key()
    if keys:
        if given is not None:
            given_b = given.encode()
            for key, bucket in keys.items():
                if hmac.compare_digest(given_b, key):
                    return bucket
            raise ApiError(401, "X-API-Key: not a valid key", {"WWW-Authenticate": "X-API-Key"})
        if request.endpoint in WRITE_ENDPOINTS or tally_cfg().serve.read_requires_key:
            raise ApiError(401, "X-API-Key: required", {"WWW-Authenticate": "X-API-Key"})
    return "a:" + client_address(proxy)


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
    log.use_format(cfg.log_format)
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
    limiter = metrics.RateLimiter(rate_limit_path(cfg), cfg.serve.rate_limit_per_s,
                                  cfg.serve.rate_limit_burst)
    allowed_hosts = allowed_host_names(cfg)
    proxy = ProxyToken(proxy_token_path(cfg))
    keys = key_buckets(cfg.serve.api_keys)

    @app.before_request
    def _start() -> Response | None:
        # Host first (a forged page learns nothing else), then who is asking, then how often.
        g.t0 = time.monotonic()
        check_host(allowed_hosts)
        if request.path.startswith("/v1/"):
            caller = authenticate(keys, proxy)
            if caller.startswith("k:"):
                g.key_bucket = caller
            if limiter.enabled:
                wait = limiter.take(caller)
                if wait:
                    return error(429, f"rate limit: at most {cfg.serve.rate_limit_per_s:g} "
                                      f"requests/s per key (or client address without one)",
                                 {"Retry-After": str(max(1, math.ceil(wait)))})
        return None

    if cfg.serve.access_log:
        access.enable()

        # Registered before _finish, so it runs after it (Flask runs these in reverse), on
        # every response: the views', the error handlers' and the rate limit's.
        @app.after_request
        def _access(resp: Response) -> Response:
            access.record(resp, lambda: client_address(proxy))
            return resp

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
        return error(503, public(str(exc)), {"Retry-After": "5"}, dependency=exc.dependency)

    @app.errorhandler(ProducerError)
    def _producer(exc: ProducerError) -> Response:
        LOG.warning("kafka did not acknowledge: %s", exc)
        metrics.BACKEND_ERRORS.labels("kafka").inc()
        return error(503, public(str(exc)), {"Retry-After": "5"}, dependency="kafka")

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
