"""The API's access log (``serve.access_log``): one structured line per request on the
``tally.access`` logger at INFO, in the process's log format (text or JSON).

Each line has ``method``, ``path``, ``query`` (the query string's parameter names, sorted, comma
separated: never their values), ``status``, ``duration_ms``, ``bytes`` (the response body's
length), ``client`` (the address the app resolves: behind the front door the one it forwarded,
an IPv6 address as its /64), ``key`` (the rate-limit bucket of the valid API key the request
carried, ``k:<digest>``, or ``-``: never the key) and ``request_id`` when the request carries
an ``X-Request-Id`` of up to 128 letters, digits and ``._:-``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

from flask import Response, g, request

from adapters import log

ACCESS = logging.getLogger("tally.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_PATH = 512
MAX_NAMES = 32
MAX_NAME = 64


def enable() -> None:
    """INFO on ``tally.access`` whatever the level of the ``tally`` logger."""
    ACCESS.setLevel(logging.INFO)


def fields(resp: Response, client: Callable[[], str]) -> dict:
    names = sorted({name[:MAX_NAME] for name in request.args.keys()})
    length = resp.content_length
    if length is None and not resp.is_streamed:
        length = resp.calculate_content_length()
    out = {
        "method": request.method[:16],
        "path": request.path[:MAX_PATH],
        "query": ",".join(names[:MAX_NAMES]),
        "status": resp.status_code,
        "duration_ms": round((time.monotonic() - g.get("t0", time.monotonic())) * 1000, 1),
        "bytes": length if length is not None else "-",
        "client": client(),
        "key": g.get("key_bucket") or "-",
    }
    rid = request.headers.get("X-Request-Id")
    if rid is not None and _REQUEST_ID.fullmatch(rid):
        out["request_id"] = rid
    return out


def record(resp: Response, client: Callable[[], str]) -> None:
    """The request's line; any failure to write it leaves the response alone."""
    try:
        log.kv(ACCESS, logging.INFO, "request", **fields(resp, client))
    except Exception:  # noqa: BLE001 - the access log never breaks a response
        try:
            ACCESS.warning("access log: could not describe %s %s", request.method,
                           request.path[:MAX_PATH], exc_info=True)
        except Exception:  # noqa: BLE001
            pass
