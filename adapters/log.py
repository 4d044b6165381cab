"""Structured, quiet-by-default logging and the progress lines long commands print.

Log records are one line each: ``time level logger message key=value ...``. The default level
is WARNING; ``-v`` on the command line raises it to INFO, ``-vv`` to DEBUG.
Progress that a person waits for (stack start, generator, batch) goes to stderr through
:func:`progress`, independent of the log level, and is silenced with ``--quiet``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_QUIET = False


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extra = getattr(record, "kv", None) or {}
        kv = " ".join(f"{k}={_fmt(v)}" for k, v in extra.items())
        line = f"{t}.{int(record.msecs):03d}Z {record.levelname} {record.name} {record.getMessage()}"
        if kv:
            line += " " + kv
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _fmt(v: Any) -> str:
    s = str(v)
    return f'"{s}"' if (" " in s or not s) else s


def setup(level: str = "WARNING", quiet: bool = False) -> None:
    global _QUIET
    _QUIET = quiet
    root = logging.getLogger("tally")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    for noisy in ("kafka", "py4j", "botocore", "boto3", "urllib3", "happybase", "thriftpy2"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"tally.{name}")


def kv(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``key=value`` fields."""
    logger.log(level, msg, extra={"kv": fields})


def progress(msg: str) -> None:
    """One line of progress for a person watching a long command."""
    if not _QUIET:
        print(msg, file=sys.stderr, flush=True)
