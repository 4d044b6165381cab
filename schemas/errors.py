"""One exception hierarchy for Tally.

Every error the platform raises on purpose derives from :class:`TallyError`. Errors that a caller
may retry (a broker briefly away, a timeout) are marked ``retriable = True``, as kafka-python does
in its ``errors.py``; the CLI prints any ``TallyError`` as one clear line and exits non-zero.
"""

from __future__ import annotations

import re
from typing import Any

# An absolute path, alone or in a file:// URI (not the path part of an http:// or s3:// URL).
_PATH = re.compile(r"""(?<![\w:/.\-])(?:file:/*)?/[^\s'"(),;]+""")


class TallyError(Exception):
    """Base of every error Tally raises on purpose."""

    retriable = False


def public(text: str, limit: int = 300) -> str:
    """``text`` fit for a response body: its first line, paths replaced by ``<path>``, at most
    ``limit`` characters (a Java stack trace or a local path says nothing to a client)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _PATH.sub("<path>", first)[:limit]


def describe(exc: BaseException) -> str:
    """``ExceptionType: message`` of any exception, fit for a response body (:func:`public`)."""
    text = public(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ConfigError(TallyError):
    """The configuration is invalid: an unknown key, a wrong type, a value out of range."""


class ValidationError(TallyError):
    """An event breaks the contract. ``field`` and ``rule`` name what was broken."""

    def __init__(self, field: str, rule: str):
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")  # the form of schemas.event.reason()


class StackError(TallyError):
    """A part of the local stack could not be started, stopped or reached."""


class PortInUseError(StackError):
    """A port the stack needs is held by another process."""


class DependencyError(TallyError):
    """A backend (Kafka, HBase, the lake) cannot be reached right now."""

    retriable = True

    def __init__(self, dependency: str, message: str):
        self.dependency = dependency
        super().__init__(f"{dependency}: {message}")


class ProducerError(TallyError):
    """One or more events were not acknowledged by Kafka."""

    def __init__(self, message: str, failures: list | None = None, retriable: bool = False):
        self.failures = failures or []
        self.retriable = retriable
        super().__init__(message)


class GeneratorError(TallyError):
    """The traffic generator was asked for something it cannot produce."""


class ApiError(TallyError):
    """A request the REST API refuses: its HTTP ``status`` (a 4xx), a message naming what is
    wrong, response ``headers`` and ``extra`` fields of the JSON error body. Not retriable: the
    same request fails again."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 **extra: Any):
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra
        super().__init__(message)


class ParamError(ApiError):
    """A bad request parameter: ``400 {"error": "<param>: <rule>"}``."""

    def __init__(self, param: str, rule: str, status: int = 400):
        self.param = param
        self.rule = rule
        super().__init__(status, f"{param}: {rule}")
