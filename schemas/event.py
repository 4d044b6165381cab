"""The event contract (CONTRACTS.md section 1), defined once.

:data:`FIELDS` lists every field with its kind and rule. From that one definition come:

* the Python validator here (:class:`EventValidator`), used by the producer, the generator and
  the HTTP ingest;
* the same rules as Spark column expressions (:mod:`schemas.event_spark`), used by the streaming
  job, with a parity test proving both give the same verdict and the same reason;
* the Spark and Arrow schemas of the raw archive (:mod:`schemas.archive`).

A reason always reads ``<field>: <rule>``. Rules are checked in field order and the first broken
one is reported, in both implementations.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping

from tally.errors import ValidationError

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

ID_CHARS = "[A-Za-z0-9._:-]"
VIDEO_CHARS = "[A-Za-z0-9_-]"

# RFC 3339 date-time with a mandatory offset; fractions beyond milliseconds are truncated.
RFC3339 = (r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
           r"(?:\.([0-9]{1,9}))?([Zz]|([+-])([0-9]{2}):([0-9]{2}))")


@dataclass(frozen=True)
class Field:
    """One field of the event and its rule.

    kind: ``string``, ``integer`` (a JSON integer that fits 64 bits) or ``timestamp`` (an
    RFC 3339 string or integer epoch milliseconds).
    """

    name: str
    kind: str
    required: bool = False
    pattern: str | None = None  # character class, e.g. "[A-Za-z0-9_-]"
    max_len: int = 64
    minimum: int | None = None
    maximum: int | None = None
    enum: bool = False  # one of the configured event types
    default: Any = None


FIELDS: tuple[Field, ...] = (
    Field("event_id", "string", required=True, pattern=ID_CHARS),
    Field("video_id", "string", required=True, pattern=VIDEO_CHARS),
    Field("event_type", "string", required=True, enum=True),
    Field("ts", "timestamp", required=True),
    Field("watch_ms", "integer", minimum=0, maximum=86_400_000),
    Field("user_id", "string"),
    Field("country", "string"),
    Field("device", "string"),
    Field("schema_version", "integer", minimum=1, maximum=2**31 - 1, default=1),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)

# The whole-record reasons; the field name "event" stands for the record itself.
RULE_UTF8 = "not valid UTF-8"
RULE_JSON = "not valid JSON"
RULE_OBJECT = "must be a JSON object"


def rule_type(f: Field) -> str:
    if f.kind == "string":
        return "must be a string"
    if f.kind == "integer":
        return "must be an integer"
    return RULE_TS_FORMAT


RULE_REQUIRED = "required"
RULE_TS_FORMAT = ("must be an RFC 3339 date-time with an offset (2026-11-27T10:15:00.123Z) "
                  "or integer epoch milliseconds")
RULE_TS_BEFORE = "must not be before 2000-01-01T00:00:00Z"


def rule_pattern(f: Field) -> str:
    return f"must be 1-{f.max_len} characters of {f.pattern}"


def rule_max_len(f: Field) -> str:
    return f"must be at most {f.max_len} characters"


def rule_range(f: Field) -> str:
    return f"must be between {f.minimum} and {f.maximum}"


def rule_enum(types: Iterable[str]) -> str:
    return f"must be one of {', '.join(types)}"


def rule_ts_future(max_future_ms: int) -> str:
    if max_future_ms % 3_600_000 == 0:
        n = max_future_ms // 3_600_000
        span = f"{n} hour" + ("s" if n != 1 else "")
    elif max_future_ms % 1000 == 0:
        span = f"{max_future_ms // 1000} s"
    else:
        span = f"{max_future_ms} ms"
    return f"must not be more than {span} after the receiving clock"


def reason(field: str, rule: str) -> str:
    """The one form of a rejection reason, in Python and in Spark."""
    return f"{field}: {rule}"


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).

    The Spark form in :mod:`schemas.event_spark` is the same arithmetic, so both agree on every
    date, including those no datetime library accepts."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    mp = m + (-3 if m > 2 else 9)
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def days_in_month(y: int, m: int) -> int:
    if m == 2:
        leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
        return 29 if leap else 28
    return 30 if m in (4, 6, 9, 11) else 31


_RFC3339_RE = re.compile(RFC3339)


@lru_cache(maxsize=8192)
def _day_number(date: str) -> int | None:
    """Days since the epoch of 'YYYY-MM-DD', None for a date that does not exist."""
    y, mo, d = int(date[0:4]), int(date[5:7]), int(date[8:10])
    if not (1 <= mo <= 12 and 1 <= d <= days_in_month(y, mo)):
        return None
    return days_from_civil(y, mo, d)


def parse_rfc3339_ms(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time with an offset, or None if it is not one."""
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        return None
    days = _day_number(text[:10])  # the regex fixes the positions of the date and time parts
    hh, mi, ss = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if days is None or hh > 23 or mi > 59 or ss > 59:
        return None
    frac, zone, sign, oh, om = m.group(7, 8, 9, 10, 11)
    offset_min = 0
    if zone not in ("Z", "z"):
        if int(oh) > 23 or int(om) > 59:
            return None
        offset_min = (int(oh) * 60 + int(om)) * (1 if sign == "+" else -1)
    millis = int((frac + "00")[:3]) if frac else 0
    return ((days * 86400 + hh * 3600 + mi * 60 + ss) * 1000 + millis - offset_min * 60_000)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, the form Tally writes."""
    import datetime as _dt

    t = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def loads_strict(text: str | bytes) -> Any:
    """JSON as Spark's ``parse_json`` reads it: no NaN/Infinity, no duplicate keys."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object_pairs)


def _is_int64(v: Any) -> bool:
    return type(v) is int and INT64_MIN <= v <= INT64_MAX


class EventValidator:
    """Checks events against the contract and returns them normalised.

    ``clock_ms`` is the receiving clock: the server's clock over HTTP, the Kafka record's
    timestamp on the stream, so that a replay decides the same way.
    """

    def __init__(self, event_types: Iterable[str] = ("view", "like", "dislike", "share", "comment"),
                 max_future_ms: int = 3_600_000):
        self.event_types = tuple(event_types)
        self._types = frozenset(self.event_types)
        self.max_future_ms = max_future_ms
        self._patterns = {f.name: re.compile(f"{f.pattern}{{1,{f.max_len}}}")
                          for f in FIELDS if f.pattern}
        self._enum_rule = rule_enum(self.event_types)
        self._future_rule = rule_ts_future(max_future_ms)
        self._plan = tuple((f.name, f.required, f.default, self._checker(f)) for f in FIELDS)

    @classmethod
    def from_config(cls, cfg: Any) -> "EventValidator":
        return cls(cfg.events.types, cfg.events.max_future_ms)

    # Entry points ---------------------------------------------------------------------------
    def validate_raw(self, raw: bytes | str, clock_ms: int) -> dict[str, Any]:
        """Validate one serialised event (a Kafka message value)."""
        if isinstance(raw, (bytes, bytearray, memoryview)):
            try:
                raw = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError("event", RULE_UTF8) from None
        try:
            obj = loads_strict(raw)
        except (ValueError, RecursionError):
            raise ValidationError("event", RULE_JSON) from None
        return self.validate(obj, clock_ms)

    def check_raw(self, raw: bytes | str, clock_ms: int) -> str | None:
        """The reason ``raw`` is rejected, or None when it is valid."""
        try:
            self.validate_raw(raw, clock_ms)
        except ValidationError as exc:
            return str(exc)
        return None

    def validate(self, obj: Any, clock_ms: int) -> dict[str, Any]:
        """Validate one parsed event; return it normalised (``ts`` as epoch ms)."""
        if type(obj) is not dict:
            raise ValidationError("event", RULE_OBJECT)
        out: dict[str, Any] = {}
        for name, required, default, check in self._plan:
            value = obj.get(name)
            if value is None:  # absent or JSON null
                if required:
                    raise ValidationError(name, RULE_REQUIRED)
                out[name] = default
            else:
                out[name] = check(value, clock_ms)
        return out

    # Rules: one specialised check per field, built once (this is on the ingest hot path) -------
    def _checker(self, f: Field):
        name = f.name
        if f.kind == "string":
            type_rule = rule_type(f)
            if f.pattern:
                fullmatch = self._patterns[name].fullmatch
                pattern_rule = rule_pattern(f)

                def check_pattern(value: Any, _clock: int) -> str:
                    if type(value) is not str:
                        raise ValidationError(name, type_rule)
                    if fullmatch(value) is None:
                        raise ValidationError(name, pattern_rule)
                    return value
                return check_pattern
            max_len, len_rule = f.max_len, rule_max_len(f)
            allowed = self._types if f.enum else None
            enum_rule = self._enum_rule

            def check_string(value: Any, _clock: int) -> str:
                if type(value) is not str:
                    raise ValidationError(name, type_rule)
                if len(value) > max_len:
                    raise ValidationError(name, len_rule)
                if allowed is not None and value not in allowed:
                    raise ValidationError(name, enum_rule)
                return value
            return check_string
        if f.kind == "integer":
            lo, hi, type_rule, range_rule = f.minimum, f.maximum, rule_type(f), rule_range(f)

            def check_integer(value: Any, _clock: int) -> int:
                if not _is_int64(value):
                    raise ValidationError(name, type_rule)
                if not lo <= value <= hi:
                    raise ValidationError(name, range_rule)
                return value
            return check_integer
        max_future, future_rule = self.max_future_ms, self._future_rule

        def check_ts(value: Any, clock_ms: int) -> int:
            if _is_int64(value):
                ms = value
            elif type(value) is str:
                ms = parse_rfc3339_ms(value)
            else:
                ms = None
            if ms is None:
                raise ValidationError(name, RULE_TS_FORMAT)
            if ms < MIN_TS_MS:
                raise ValidationError(name, RULE_TS_BEFORE)
            if ms - clock_ms > max_future:
                raise ValidationError(name, future_rule)
            return ms
        return check_ts

    def partition(self, events: Iterable[Any], clock_ms: int
                  ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
        """Split a batch into (index, valid event) and (index, reason): one bad event never
        affects the others."""
        good: list[tuple[int, dict[str, Any]]] = []
        bad: list[tuple[int, str]] = []
        for i, obj in enumerate(events):
            try:
                good.append((i, self.validate(obj, clock_ms)))
            except ValidationError as exc:
                bad.append((i, str(exc)))
        return good, bad


def to_json(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of an event, the Kafka message value (orjson: on the ingest hot path;
    the json module for what orjson refuses, such as integers beyond 64 bits)."""
    try:
        return _orjson_dumps(event)
    except TypeError:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson is a dependency; keep the module importable
    def _orjson_dumps(event: Any) -> bytes:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
