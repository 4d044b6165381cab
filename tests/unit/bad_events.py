"""Bad events and the exact reason each must be rejected with (shared by the validator tests
and the Spark parity test). CLOCK is the receiving clock used with them."""

from __future__ import annotations

import json

CLOCK = 1_795_000_000_000  # 2026-11-18T...Z
GOOD = {"event_id": "e-1", "video_id": "vid-1", "event_type": "view",
        "ts": "2026-11-17T10:15:00.123Z", "watch_ms": 1500, "user_id": "u1", "country": "US",
        "device": "web"}
TYPES = "view, like, dislike, share, comment"
TS_FORMAT = ("ts: must be an RFC 3339 date-time with an offset (2026-11-27T10:15:00.123Z) "
             "or integer epoch milliseconds")


def with_(**changes) -> bytes:
    e = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            e.pop(k, None)
        else:
            e[k] = v
    return json.dumps(e, ensure_ascii=False).encode("utf-8")


def deep(n: int) -> list:
    """A list nested ``n`` deep (an event holding it is nested n + 1 deep)."""
    v: list = []
    for _ in range(n - 1):
        v = [v]
    return v


# (name, raw bytes, expected reason)
BAD: list[tuple[str, bytes, str]] = [
    ("not json", b'{"event_id": "e-1", ', "event: not valid JSON"),
    ("empty", b"", "event: not valid JSON"),
    ("trailing garbage", json.dumps(GOOD).encode() + b" x", "event: not valid JSON"),
    ("NaN", with_(watch_ms=1)[:-1] + b', "x": NaN}', "event: not valid JSON"),
    ("duplicate key", json.dumps(GOOD).encode()[:-1] + b', "video_id": "b"}', "event: not valid JSON"),
    ("bad utf-8", json.dumps(GOOD).encode()[:-2] + b'\xff"}', "event: not valid UTF-8"),
    ("array", b"[" + json.dumps(GOOD).encode() + b"]", "event: must be a JSON object"),
    ("string", b'"view"', "event: must be a JSON object"),
    ("number", b"42", "event: must be a JSON object"),
    ("null", b"null", "event: must be a JSON object"),
    ("missing event_id", with_(event_id=...), "event_id: required"),
    ("null event_id", with_(event_id=None), "event_id: required"),
    ("event_id number", with_(event_id=7), "event_id: must be a string"),
    ("event_id empty", with_(event_id=""), "event_id: must be 1-64 characters of [A-Za-z0-9._:-]"),
    ("event_id space", with_(event_id="a b"), "event_id: must be 1-64 characters of [A-Za-z0-9._:-]"),
    ("event_id 65", with_(event_id="e" * 65), "event_id: must be 1-64 characters of [A-Za-z0-9._:-]"),
    ("event_id newline", with_(event_id="abc\n"), "event_id: must be 1-64 characters of [A-Za-z0-9._:-]"),
    ("event_id unicode digit", with_(event_id="e\u0663"), "event_id: must be 1-64 characters of [A-Za-z0-9._:-]"),
    ("missing video_id", with_(video_id=...), "video_id: required"),
    ("video_id unicode", with_(video_id="vidé"), "video_id: must be 1-64 characters of [A-Za-z0-9_-]"),
    ("video_id emoji", with_(video_id="v\U0001F600"), "video_id: must be 1-64 characters of [A-Za-z0-9_-]"),
    ("video_id dot", with_(video_id="v.1"), "video_id: must be 1-64 characters of [A-Za-z0-9_-]"),
    ("video_id object", with_(video_id={"a": 1}), "video_id: must be a string"),
    ("video_id huge", with_(video_id="v" * 100_000), "video_id: must be 1-64 characters of [A-Za-z0-9_-]"),
    ("event_type unknown", with_(event_type="purchase"), f"event_type: must be one of {TYPES}"),
    ("event_type case", with_(event_type="View"), f"event_type: must be one of {TYPES}"),
    ("event_type list", with_(event_type=["view"]), "event_type: must be a string"),
    ("missing ts", with_(ts=...), "ts: required"),
    ("ts words", with_(ts="yesterday"), TS_FORMAT),
    ("ts no offset", with_(ts="2026-11-17T10:15:00"), TS_FORMAT),
    ("ts date only", with_(ts="2026-11-17"), TS_FORMAT),
    ("ts feb 30", with_(ts="2026-02-30T10:15:00Z"), TS_FORMAT),
    ("ts hour 24", with_(ts="2026-11-17T24:00:00Z"), TS_FORMAT),
    ("ts leap second", with_(ts="2026-11-17T10:15:60Z"), TS_FORMAT),
    ("ts offset 24h", with_(ts="2026-11-17T10:15:00+24:00"), TS_FORMAT),
    ("ts bool", with_(ts=True), TS_FORMAT),
    ("ts float", with_(ts=1.7e12), TS_FORMAT),
    ("ts huge int", with_(ts=10**20), TS_FORMAT),
    ("ts string millis", with_(ts="1795000000000"), TS_FORMAT),
    ("ts ancient", with_(ts="1999-12-31T23:59:59.999Z"), "ts: must not be before 2000-01-01T00:00:00Z"),
    ("ts ancient millis", with_(ts=946_684_799_999), "ts: must not be before 2000-01-01T00:00:00Z"),
    ("ts negative", with_(ts=-5), "ts: must not be before 2000-01-01T00:00:00Z"),
    ("ts future", with_(ts=CLOCK + 3_600_001), "ts: must not be more than 1 hour after the receiving clock"),
    ("ts future string", with_(ts="2099-01-01T00:00:00Z"), "ts: must not be more than 1 hour after the receiving clock"),
    ("watch_ms negative", with_(watch_ms=-1), "watch_ms: must be between 0 and 86400000"),
    ("watch_ms too large", with_(watch_ms=86_400_001), "watch_ms: must be between 0 and 86400000"),
    ("watch_ms string", with_(watch_ms="100"), "watch_ms: must be an integer"),
    ("watch_ms fraction", with_(watch_ms=1.5), "watch_ms: must be an integer"),
    ("watch_ms 1.0", with_(watch_ms=1.0), "watch_ms: must be an integer"),
    ("watch_ms bool", with_(watch_ms=False), "watch_ms: must be an integer"),
    ("user_id 65", with_(user_id="u" * 65), "user_id: must be at most 64 characters"),
    ("user_id number", with_(user_id=5), "user_id: must be a string"),
    ("country huge", with_(country="X" * 10_000), "country: must be at most 64 characters"),
    ("device list", with_(device=[]), "device: must be a string"),
    ("schema_version string", with_(schema_version="2"), "schema_version: must be an integer"),
    ("schema_version zero", with_(schema_version=0), "schema_version: must be between 1 and 2147483647"),
    ("first rule wins", with_(event_id=..., video_id=...), "event_id: required"),
    # The JSON limits (schemas.event): each broken one is "event: not valid JSON".
    ("number of 101 characters", with_(x=10**100), "event: not valid JSON"),
    ("negative number of 101 characters", with_(x=-(10**99)), "event: not valid JSON"),
    ("number of 100 characters in a field", with_(watch_ms=10**99), "watch_ms: must be an integer"),
    ("integer of 4,301 digits", with_(watch_ms=...)[:-1] + b', "x": ' + b"7" * 4301 + b"}",
     "event: not valid JSON"),
    ("number beyond a double", with_(x=1)[:-2] + b'1e400}', "event: not valid JSON"),
    ("key of 257 characters", with_(**{"k" * 257: 1}), "event: not valid JSON"),
    ("key of 257 characters nested", with_(x={"a": [{"\u00e9" * 257: 1}]}), "event: not valid JSON"),
    ("depth 65", with_(x=deep(64)),
     "event: not valid JSON"),
    ("depth 1000", with_(x=...)[:-1] + b', "x": ' + b"[" * 999 + b"]" * 999 + b"}",
     "event: not valid JSON"),
    ("lone surrogate in an optional field", json.dumps(dict(GOOD, user_id="\ud800")).encode(),
     "event: not valid JSON"),
    ("lone surrogate in an extra field", json.dumps(dict(GOOD, x=["\udc00"])).encode(),
     "event: not valid JSON"),
    ("reversed surrogates", json.dumps(dict(GOOD, x="\udc00\ud800")).encode(),
     "event: not valid JSON"),
    ("lone surrogate in a key", json.dumps(dict(GOOD, **{"\ud800": 1})).encode(),
     "event: not valid JSON"),
    ("closes the old wrapper", json.dumps(GOOD).encode() + b',"tally-end"] x',
     "event: not valid JSON"),
    ("Infinity", with_(x=1)[:-2] + b"Infinity}", "event: not valid JSON"),
]

def utc_ms(*args) -> int:
    """Epoch ms from the standard library, independent of the code under test."""
    import datetime as dt

    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp() * 1000)


assert utc_ms(2026, 11, 17, 10, 15) + 123 == 1_794_910_500_123

# (name, raw bytes, expected normalised ts in ms)
GOOD_CASES: list[tuple[str, bytes, int]] = [
    ("rfc3339 Z", with_(ts="2026-11-17T10:15:00.123Z"), 1_794_910_500_123),
    ("rfc3339 offset", with_(ts="2026-11-17T11:15:00.123+01:00"), 1_794_910_500_123),
    ("rfc3339 negative offset", with_(ts="2026-11-17T05:45:00.123-04:30"), 1_794_910_500_123),
    ("rfc3339 micros truncated", with_(ts="2026-11-17T10:15:00.123999Z"), 1_794_910_500_123),
    ("rfc3339 one digit fraction", with_(ts="2026-11-17T10:15:00.1Z"), 1_794_910_500_100),
    ("rfc3339 lowercase", with_(ts="2026-11-17t10:15:00z"), 1_794_910_500_000),
    ("epoch millis", with_(ts=1_794_910_500_123), 1_794_910_500_123),
    ("leap day", with_(ts="2024-02-29T00:00:00Z"), utc_ms(2024, 2, 29)),
    ("first instant allowed", with_(ts="2000-01-01T00:00:00Z"), utc_ms(2000, 1, 1)),
    ("exactly one hour ahead", with_(ts=CLOCK + 3_600_000), CLOCK + 3_600_000),
    ("minimal", json.dumps({"event_id": "a", "video_id": "b", "event_type": "like",
                            "ts": 1_794_910_500_000}).encode(), 1_794_910_500_000),
    ("later schema version with extra fields",
     with_(schema_version=3, campaign={"id": "x"}, tags=["a"]), 1_794_910_500_123),
    ("nulls for optional fields", with_(watch_ms=None, user_id=None), 1_794_910_500_123),
    ("64-char ids", with_(event_id="e" * 64, video_id="v" * 64), 1_794_910_500_123),
    ("watch_ms bounds", with_(watch_ms=86_400_000), 1_794_910_500_123),
    ("unicode in optional field", with_(country="Côte d’Ivoire"), 1_794_910_500_123),
    # At the JSON limits, not beyond.
    ("number of 100 characters", with_(x=10**99), 1_794_910_500_123),
    ("key of 256 characters, astral", with_(**{"\U0001F600" * 256: 1}), 1_794_910_500_123),
    ("depth 64", with_(x=deep(63)),
     1_794_910_500_123),
    ("surrogate pair", json.dumps(dict(GOOD, user_id="\U0001F600")).encode(), 1_794_910_500_123),
    ("whitespace after the value", json.dumps(GOOD).encode() + b" \n\t\r", 1_794_910_500_123),
]
