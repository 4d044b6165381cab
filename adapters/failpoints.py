"""Named points in the jobs where a test can inject a fault — a crash between two writes, say.

In production nothing is registered: a point is a no-op and :func:`armed` is False, so a call
site can skip work that only a fault needs. The fault tests register a handler from a test-only
``sitecustomize`` (tests/faults/seam/) on the path of the processes they start; no production
code reads any setting or variable for it.
"""

from __future__ import annotations

from typing import Any, Callable

Handler = Callable[[str, dict[str, Any]], None]
_handlers: list[Handler] = []


def register(handler: Handler) -> None:
    _handlers.append(handler)


def armed() -> bool:
    return bool(_handlers)


def failpoint(name: str, **context: Any) -> None:
    """Pass point ``name`` (``context``: what a handler may match on, e.g. the batch id)."""
    for handler in _handlers:
        handler(name, context)
