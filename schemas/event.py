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
from typing import Any, Iterable, Mapping, Sequence

from schemas.errors import ValidationError

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


# JSON: RFC 8259 text within explicit limits --------------------------------------------------
#
# Both implementations (this module and schemas.event_spark) enforce the same limits, well inside
# what either parser allows on its own (Python: its recursion limit and 4,300-digit integers;
# Spark/Jackson: 1,000 levels, 1,000-character numbers, 50,000-character keys), so that they
# reach the same verdict on every text. Breaking any of them is ``event: not valid JSON``, like
# a syntax error, so the order in which they are checked never changes the reason.

MAX_NUMBER_CHARS = 100  # characters of a number literal, its sign and exponent included
MAX_KEY_CHARS = 256  # characters of a decoded object key (len() of the str)
MAX_DEPTH = 64  # nesting of objects and arrays; a top-level object is depth 1
MAX_BODY_DEPTH = 500  # nesting of a whole HTTP body (events are held to MAX_DEPTH each)

_INF = float("inf")
# Escapes and strings, tokenized left to right; single-character-class repetitions only.
_ESCAPE_RE = re.compile(r"\\[\s\S]")
_STRING_RE = re.compile(r'"[^"]*"')
_NON_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("{")] = _DEPTH_STEP[ord("[")] = 1
_DEPTH_STEP[ord("}")] = _DEPTH_STEP[ord("]")] = -1
# A number literal of more than MAX_NUMBER_CHARS characters needs such a run; the look-behind
# makes the search linear (it only starts at the beginning of a run).
_LONG_NUMBER_RE = re.compile(r"(?<![-+.0-9eE])[-+.0-9eE]{%d}" % (MAX_NUMBER_CHARS + 1))
# Where a decoded string can hold a surrogate code point: an escape of one (text decoded from
# UTF-8 holds no raw ones).
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class _Invalid:
    """Stands in the parsed value where a limit was broken (the parse hooks never raise)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not valid JSON>"


INVALID = _Invalid()


def text_depth(text: str, limit: int) -> int:
    """An upper bound of the nesting depth of ``text``, exact when it is over ``limit`` or the
    text is valid JSON; without recursion.

    Escapes, then strings are removed (left to right, as a JSON parser reads them), then only
    brackets are kept and the running depth taken. For a text that is not valid JSON the result
    still bounds how deep a parser goes before it stops at the first error, since up to that
    point it reads strings and brackets the same way."""
    opens = text.count("{") + text.count("[")
    if opens <= limit:
        return opens
    s = _ESCAPE_RE.sub("", text) if "\\" in text else text
    s = _NON_BRACKET_RE.sub("", _STRING_RE.sub("", s))
    if len(s) <= limit:
        return len(s)
    from itertools import accumulate

    return max(accumulate(map(_DEPTH_STEP.__getitem__, s.encode("ascii"))), default=0)


@dataclass(frozen=True)
class Parsed:
    """A parsed JSON text: ``value``, ``depth`` (an upper bound of its nesting, at most the
    ``max_depth`` it was parsed with) and ``clean``: True when no limit was broken anywhere in
    it and no string can hold a lone surrogate; when False, :func:`json_ok` decides, for the
    value or for each part of it."""

    value: Any
    depth: int
    clean: bool


def parse_json(text: str, max_depth: int = MAX_DEPTH, from_utf8: bool = True) -> Parsed:
    """Parse one JSON text (RFC 8259: no NaN/Infinity, nothing after the value).

    Raises ValueError for a syntax error or a text nested deeper than ``max_depth`` (checked
    before parsing, so that the parser can never hit the recursion limit). The other limits
    never raise: where one is broken the parsed value holds :data:`INVALID` and ``clean`` is
    False, so that one bad event of an array can be told from the others. ``from_utf8``: the
    text was decoded from UTF-8, so it holds no raw surrogate."""
    depth = text_depth(text, max_depth)
    if depth > max_depth:
        raise ValueError(f"nested deeper than {max_depth}")
    broken: list[str] = []

    def number(s: str) -> Any:
        if len(s) > MAX_NUMBER_CHARS:
            broken.append("number")
            return INVALID
        return None

    def parse_int(s: str) -> Any:
        return number(s) or int(s)  # the length is checked before int(): no 4,300-digit limit

    def parse_float(s: str) -> Any:
        bad = number(s)
        if bad is not None:
            return bad
        f = float(s)
        if f == _INF or f == -_INF:  # overflows a double (1e400): no finite value to send on
            broken.append("number")
            return INVALID
        return f

    def parse_constant(s: str) -> Any:  # NaN, Infinity, -Infinity
        broken.append("constant")
        return INVALID

    def pairs(items: list[tuple[str, Any]]) -> Any:
        out = dict(items)
        if len(out) != len(items) or (out and max(map(len, out)) > MAX_KEY_CHARS):
            broken.append("key")
            return INVALID
        return out

    long_numbers = _LONG_NUMBER_RE.search(text) is not None
    decoder = json.JSONDecoder(object_pairs_hook=pairs, parse_float=parse_float,
                               parse_int=parse_int if long_numbers else int,
                               parse_constant=parse_constant)
    value = decoder.decode(text)  # ValueError (JSONDecodeError) on syntax or trailing text
    clean = (not broken and _SURROGATE_ESCAPE_RE.search(text) is None
             and (from_utf8 or _SURROGATE_RE.search(text) is None))
    return Parsed(value, depth, clean)


def _int_ok(v: int) -> bool:
    """An integer written as at most MAX_NUMBER_CHARS characters."""
    if -10**15 < v < 10**15:
        return True
    return v.bit_length() <= 4 * MAX_NUMBER_CHARS and len(str(v)) <= MAX_NUMBER_CHARS


def json_ok(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``value`` is JSON within the limits: only JSON types (str keys), nesting at most
    ``max_depth`` (a top-level object or array is depth 1), keys of at most MAX_KEY_CHARS
    characters, integers of at most MAX_NUMBER_CHARS characters, finite floats, no lone
    surrogate in any string or key, no :data:`INVALID`. Iterative (no recursion): any depth
    is answered."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        if isinstance(v, str):
            if not v.isascii() and _SURROGATE_RE.search(v):
                return False
        elif v is None or v is True or v is False:
            pass
        elif isinstance(v, int):
            if not _int_ok(v):
                return False
        elif isinstance(v, float):
            if v != v or v in (_INF, -_INF):
                return False
        elif isinstance(v, dict):
            if depth >= max_depth:
                return False
            for k, x in v.items():
                if (not isinstance(k, str) or len(k) > MAX_KEY_CHARS
                        or (not k.isascii() and _SURROGATE_RE.search(k))):
                    return False
                push((x, depth + 1))
        elif isinstance(v, (list, tuple)):
            if depth >= max_depth:
                return False
            for x in v:
                push((x, depth + 1))
        else:  # INVALID or a type JSON does not have
            return False
    return True


def loads_strict(text: str | bytes) -> Any:
    """One JSON value within the limits (raises ValueError otherwise): no NaN/Infinity, no
    duplicate keys, nothing after the value, the limits above."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
        parsed = parse_json(text, MAX_DEPTH)
    else:
        parsed = parse_json(text, MAX_DEPTH, from_utf8=False)
    if not parsed.clean and not json_ok(parsed.value):
        raise ValueError("not valid JSON: a limit is broken")
    return parsed.value


@dataclass(frozen=True)
class Batch:
    """An HTTP body read by :func:`loads_batch`: its events (one, or the elements of an array),
    whether each is JSON within the limits, and whether the body was an array."""

    events: list[Any]
    json_ok: list[bool]
    array: bool


def loads_batch(text: str, max_depth: int = MAX_BODY_DEPTH) -> Batch:
    """A body of one event or an array of them, with a verdict on the JSON limits per event
    (each event is held to MAX_DEPTH by itself). Raises ValueError for a body that is not JSON
    or is nested deeper than ``max_depth``."""
    parsed = parse_json(text, max_depth)
    array = isinstance(parsed.value, list)
    events = parsed.value if array else [parsed.value]
    if parsed.clean and parsed.depth - array <= MAX_DEPTH:
        ok = [True] * len(events)
    else:
        ok = [json_ok(e) for e in events]
    return Batch(events, ok, array)


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
        """Validate one serialised event (a Kafka message value): UTF-8, then JSON within the
        limits (one reason, ``event: not valid JSON``, for every way of breaking them), then
        the contract."""
        from_utf8 = isinstance(raw, (bytes, bytearray, memoryview))
        if from_utf8:
            try:
                raw = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError("event", RULE_UTF8) from None
        try:
            parsed = parse_json(raw, MAX_DEPTH, from_utf8)
        except ValueError:
            raise ValidationError("event", RULE_JSON) from None
        if not parsed.clean and not json_ok(parsed.value):
            raise ValidationError("event", RULE_JSON)
        return self._fields(parsed.value, clock_ms)

    def check_raw(self, raw: bytes | str, clock_ms: int) -> str | None:
        """The reason ``raw`` is rejected, or None when it is valid."""
        try:
            self.validate_raw(raw, clock_ms)
        except ValidationError as exc:
            return str(exc)
        return None

    def validate(self, obj: Any, clock_ms: int) -> dict[str, Any]:
        """Validate one event given as a Python value; return it normalised (``ts`` as epoch
        ms). The value must be JSON within the limits (:func:`json_ok`), so that what is sent
        is what the stream accepts."""
        if not json_ok(obj):
            raise ValidationError("event", RULE_JSON)
        return self._fields(obj, clock_ms)

    def _fields(self, obj: Any, clock_ms: int) -> dict[str, Any]:
        """The contract's rules on a value already known to be JSON within the limits."""
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

    def partition(self, events: Iterable[Any], clock_ms: int,
                  json_checked: Sequence[bool] | None = None
                  ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
        """Split a batch into (index, valid event) and (index, reason): one bad event never
        affects the others. ``json_checked``: per event, whether it is already known to be JSON
        within the limits (:attr:`Batch.json_ok`); without it each event is checked."""
        good: list[tuple[int, dict[str, Any]]] = []
        bad: list[tuple[int, str]] = []
        for i, obj in enumerate(events):
            try:
                if json_checked is None:
                    good.append((i, self.validate(obj, clock_ms)))
                elif json_checked[i]:
                    good.append((i, self._fields(obj, clock_ms)))
                else:
                    raise ValidationError("event", RULE_JSON)
            except ValidationError as exc:
                bad.append((i, str(exc)))
        return good, bad


def to_json(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of an event, the Kafka message value (orjson: on the ingest hot path;
    the json module for what orjson refuses, such as integers beyond 64 bits).

    Raises (TypeError, ValueError, UnicodeEncodeError) for what it cannot write as JSON, such as
    a lone surrogate; the fallback refuses NaN and Infinity instead of writing them (orjson
    writes them as null). An event that passed the validator holds none of these."""
    try:
        return _orjson_dumps(event)
    except TypeError:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")


try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson is a dependency; keep the module importable
    def _orjson_dumps(event: Any) -> bytes:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
