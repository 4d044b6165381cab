"""What the blueprints reach from a request: the app's config and resources, error responses, the
caller's key, and the state files every worker and instance of one state directory shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Response, current_app, jsonify, request

from schemas.config import TallyConfig
from serving_layer.service import Resources


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


def rate_limit_path(cfg: TallyConfig) -> Path:
    return cfg.state_path / "run" / "ratelimit.sqlite"


def proxy_token_path(cfg: TallyConfig) -> Path:
    """The front door's token (written by `tally front up`; see serving_layer/app.py)."""
    return cfg.state_path / "front" / "proxy-token"
