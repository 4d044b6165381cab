"""Structured, quiet-by-default logging and the progress lines long commands print.

Log records are one line each, in one of two formats (``--log-format``, config ``log_format``):

- ``text`` (the default), logfmt: ``ts=... level=INFO logger=tally.serve msg="view loaded"
  day=2024-05-01 ...``. A value that is empty or holds a space, ``=``, ``"``, ``\\`` or a
  control character is a double-quoted JSON string (``\\"``, ``\\\\``, ``\\n`` ...), so every
  line splits back into its pairs; an exception's traceback is the ``exc`` value.
- ``json``: one JSON object per line with ``ts`` (RFC 3339 UTC, milliseconds, ``Z``),
  ``level``, ``logger``, ``msg``, the record's fields as further keys and ``exc``.

A field named like a fixed key (``ts``, ``level``, ``logger``, ``msg``, ``exc``) is written as
that name with ``_`` appended. The default level is WARNING; ``-v`` on the command line raises it
to INFO, ``-vv`` to DEBUG.
Progress that a person waits for (stack start, generator, batch) goes to stderr through
:func:`progress`, independent of the log level, and is silenced with ``--quiet``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from typing import Any, Mapping

_QUIET = False


FORMATS = ("text", "json")
FIXED = ("ts", "level", "logger", "msg", "exc")
_BARE = re.compile(r'[^\s"=\\\x00-\x1f\x7f-\x9f\u2028\u2029]+')
# What json.dumps(ensure_ascii=False) leaves raw but a line splitter may break on.
_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.:/-]")


def _timestamp(record: logging.LogRecord) -> str:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{t}.{int(record.msecs):03d}Z"


def fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The record as ordered pairs: the fixed keys, the structured fields (renamed with a
    trailing ``_`` where they would collide), ``exc`` and ``stack`` when there is one."""
    out: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname,
                           "logger": record.name, "msg": record.getMessage()}
    for key, value in (getattr(record, "kv", None) or {}).items():
        key = _KEY_CHARS.sub("_", str(key)) or "_"
        while key in out or key in FIXED:
            key += "_"
        out[key] = value
    if record.exc_info:
        out["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        out["exc"] = record.exc_text
    if record.stack_info:
        out["stack"] = formatter.formatStack(record.stack_info)
    return out


class KeyValueFormatter(logging.Formatter):
    """logfmt: ``key=value`` pairs, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in fields(record, self).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data = {k: _jsonable(v) for k, v in fields(record, self).items()}
        return _one_line(json.dumps(data, ensure_ascii=False, default=str))


def _fmt(v: Any) -> str:
    """A logfmt value: bare when it is safe to be, else a quoted JSON string."""
    if v is None:
        s = "null"
    elif isinstance(v, bool):
        s = "true" if v else "false"
    else:
        s = str(v)
    return s if _BARE.fullmatch(s) else _one_line(json.dumps(s, ensure_ascii=False))


def _one_line(text: str) -> str:
    return _RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    return str(v)


def formatter(fmt: str = "text") -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return JsonFormatter() if fmt == "json" else KeyValueFormatter()


def setup(level: str = "WARNING", quiet: bool = False, fmt: str = "text") -> None:
    global _QUIET
    _QUIET = quiet
    root = logging.getLogger("tally")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    for noisy in ("kafka", "py4j", "botocore", "boto3", "urllib3", "happybase", "thriftpy2"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def initial_format(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The format to log in before the config is read: the flag's, else a valid
    ``TALLY_LOG_FORMAT``, else text (:func:`use_format` applies the config's afterwards)."""
    env = (os.environ if environ is None else environ).get("TALLY_LOG_FORMAT")
    return flag or (env if env in FORMATS else "text")


def use_format(fmt: str) -> None:
    """Switch the handlers :func:`setup` installed to ``fmt`` (level and quiet as they are);
    nothing when logging was not set up here."""
    f = formatter(fmt)
    for handler in logging.getLogger("tally").handlers:
        handler.setFormatter(f)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"tally.{name}")


def kv(logger: logging.Logger, level: int, msg: str, /, **fields: Any) -> None:
    """Log ``msg`` with structured ``key=value`` fields."""
    logger.log(level, msg, extra={"kv": fields})


def progress(msg: str) -> None:
    """One line of progress for a person watching a long command."""
    if not _QUIET:
        print(msg, file=sys.stderr, flush=True)
