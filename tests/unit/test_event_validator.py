"""The Python validator of the event contract: each rule, each message, and batch isolation."""

from __future__ import annotations

import json

import pytest

from schemas.event import EventValidator, days_from_civil, format_ms, parse_rfc3339_ms
from tally.errors import ValidationError
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
