"""The Python validator of the event contract: each rule, each message, and batch isolation."""

from __future__ import annotations

import json

import pytest

from schemas.errors import ValidationError
from schemas.event import EventValidator, days_from_civil, format_ms, parse_rfc3339_ms
from tests.unit.bad_events import BAD, CLOCK, GOOD, GOOD_CASES

V = EventValidator()


def test_enough_distinct_bad_events():
    assert len({name for name, _, _ in BAD}) >= 25
    assert len({reason for _, _, reason in BAD}) >= 20


@pytest.mark.parametrize("name,raw,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_event_rejected_with_reason(name, raw, expected):
    with pytest.raises(ValidationError) as info:
        V.validate_raw(raw, CLOCK)
    assert str(info.value) == expected
    assert info.value.field == expected.split(":", 1)[0]


@pytest.mark.parametrize("name,raw,ts", GOOD_CASES, ids=[g[0] for g in GOOD_CASES])
def test_good_event_normalised(name, raw, ts):
    event = V.validate_raw(raw, CLOCK)
    assert event["ts"] == ts
    assert event["schema_version"] == json.loads(raw).get("schema_version", 1)


def test_normalised_fields():
    event = V.validate_raw(json.dumps(GOOD).encode(), CLOCK)
    assert event == {"event_id": "e-1", "video_id": "vid-1", "event_type": "view",
                     "ts": 1_794_910_500_123, "watch_ms": 1500, "user_id": "u1",
                     "country": "US", "device": "web", "schema_version": 1}


def test_valid_events_in_a_batch_are_unaffected_by_bad_ones():
    batch = [GOOD, {"video_id": "x"}, dict(GOOD, event_id="e-2"), "not an object",
             dict(GOOD, watch_ms=-4), dict(GOOD, event_id="e-3", ts=CLOCK)]
    good, bad = V.partition(batch, CLOCK)
    assert [i for i, _ in good] == [0, 2, 5]
    assert [e["event_id"] for _, e in good] == ["e-1", "e-2", "e-3"]
    assert bad == [(1, "event_id: required"), (3, "event: must be a JSON object"),
                   (4, "watch_ms: must be between 0 and 86400000")]


def test_configured_event_types_and_skew():
    v = EventValidator(event_types=("play", "pause"), max_future_ms=60_000)
    with pytest.raises(ValidationError, match="event_type: must be one of play, pause"):
        v.validate(GOOD, CLOCK)
    with pytest.raises(ValidationError, match="ts: must not be more than 60 s after"):
        v.validate(dict(GOOD, event_type="play", ts=CLOCK + 60_001), CLOCK)
    assert v.validate(dict(GOOD, event_type="play", ts=CLOCK + 60_000), CLOCK)["ts"] == CLOCK + 60_000


def test_days_from_civil_matches_the_calendar():
    import datetime as dt

    for d in (dt.date(1970, 1, 1), dt.date(2000, 2, 29), dt.date(1600, 3, 1), dt.date(9999, 12, 31),
              dt.date(2026, 11, 28), dt.date(1, 1, 1)):
        assert days_from_civil(d.year, d.month, d.day) == (d - dt.date(1970, 1, 1)).days


def test_rfc3339_round_trip():
    for ms in (946_684_800_000, 1_794_910_500_123, 253_402_300_799_999):
        assert parse_rfc3339_ms(format_ms(ms)) == ms


# The JSON limits -------------------------------------------------------------------------------

def test_json_limits_on_python_values():
    from schemas.event import INVALID, MAX_DEPTH, json_ok

    def nest(n):  # a list nested n deep
        v = []
        for _ in range(n - 1):
            v = [v]
        return v

    assert json_ok({"a": [1, "x", None, True, 1.5, {"b": ()}]})
    assert json_ok(10**99) and json_ok(-(10**98)) and not json_ok(10**100)
    assert not json_ok(-(10**99)) and not json_ok(10**5000)  # no int-string limit hit
    assert not json_ok(float("inf")) and not json_ok(float("nan")) and json_ok(-0.0)
    assert json_ok(nest(MAX_DEPTH)) and not json_ok(nest(MAX_DEPTH + 1))
    assert not json_ok(nest(100_000))  # no recursion
    assert json_ok({"k" * 256: 1}) and not json_ok({"k" * 257: 1})
    assert json_ok({"\U0001F600" * 256: 1})  # characters, not UTF-8 or UTF-16 units
    assert not json_ok({1: "a"}) and not json_ok({"a": object()}) and not json_ok(INVALID)
    for s in ("\ud800", "a\udfff", "\udc00\ud800"):
        assert not json_ok(s) and not json_ok({s: 1}) and not json_ok([{"a": s}])
    assert json_ok("\U0001F600\ufffe")


def test_validate_refuses_what_the_stream_would_refuse():
    """The producer's path (a Python value, then to_json): what passes is what the stream
    accepts, so nothing acknowledged is dead-lettered."""
    for extra in (10**100, "\ud800", float("inf"), {"k" * 257: 1}, {2: 1}, {"a": set()}):
        with pytest.raises(ValidationError, match="^event: not valid JSON$"):
            V.validate(dict(GOOD, x=extra), CLOCK)
    V.validate(dict(GOOD, x=10**40, y=[{"k" * 256: -0.0}]), CLOCK)


def test_parse_never_recurses_or_hits_the_int_limit():
    from schemas.event import parse_json, text_depth

    for raw in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                b'{"x":' + b"7" * 100_000 + b"}", b'{"x":' + b"7" * 101 + b"}",
                b'{"x":1.' + b"7" * 5000 + b"}"):
        assert V.check_raw(raw, CLOCK) == "event: not valid JSON"
    # Brackets in strings and escaped quotes do not count.
    assert text_depth('["[[[", "\\"[[", {"a": "]]]"}]' * 40, 2) == 2
    assert text_depth("[" * 70 + "]" * 70, 64) == 70
    with pytest.raises(ValueError):
        parse_json("[" * 65 + "]" * 65, 64)
    assert parse_json("[" * 64 + "]" * 64, 64).clean


def test_strict_text_rules():
    """Nothing after the value, whitespace only as JSON has it, no BOM, no raw lone surrogate
    in a str."""
    good = json.dumps(GOOD)
    assert V.check_raw(good + " \t\r\n", CLOCK) is None
    for bad in (good + " x", good + "\x0b", "\ufeff" + good, good[:-1] + ', "x": "\ud800"}',
                good[:-1] + ', "x": NaN}', good + ',"tally-end"]'):
        assert V.check_raw(bad, CLOCK) == "event: not valid JSON", bad[-20:]


def test_loads_batch_judges_each_event():
    from schemas.event import MAX_DEPTH, loads_batch

    ok = json.dumps(GOOD)
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH  # depth 64 as an event: fine; 65 in this one
    body = "[" + ",".join([ok, '{"a":"\\ud800"}', '{"a":1,"a":2}', '{"x":' + deep + "}",
                           deep, '{"x":' + "1" * 101 + "}", ok]) + "]"
    b = loads_batch(body)
    assert b.array and b.json_ok == [True, False, False, False, True, False, True]
    assert loads_batch(ok).json_ok == [True] and not loads_batch(ok).array
    with pytest.raises(ValueError):
        loads_batch("[" * 501 + "]" * 501)
    with pytest.raises(ValueError):
        loads_batch(ok + " x")
    good, bad = V.partition(b.events, CLOCK, b.json_ok)
    assert [i for i, _ in good] == [0, 6]
    assert bad == [(1, "event: not valid JSON"), (2, "event: not valid JSON"),
                   (3, "event: not valid JSON"), (4, "event: must be a JSON object"),
                   (5, "event: not valid JSON")]


def test_to_json_never_writes_what_is_not_json():
    from schemas.event import to_json

    assert json.loads(to_json(dict(GOOD, x=10**30))) == dict(GOOD, x=10**30)  # the fallback
    for bad in ({"x": "\ud800"}, {"x": 10**30, "y": float("inf")}, {"x": 10**30, "y": "\udc00"}):
        with pytest.raises((TypeError, ValueError)):
            to_json(bad)
