"""Request parameters and the merge planning of the serving layer (no services)."""

from __future__ import annotations

import pytest

from schemas.config import load_config
from schemas.event import parse_rfc3339_ms
from serving_layer.params import ParamError, parse_counts, parse_time, parse_top
from serving_layer.plan import Part, day_pieces, days_of, plan

CFG = load_config(environ={})
H = 1_764_028_800_000  # 2025-11-25T00:00:00Z
DAY, HOUR, MIN = 86_400_000, 3_600_000, 60_000


def test_param_errors_are_tally_errors_not_retriable():
    from schemas.errors import ApiError, TallyError

    with pytest.raises(ParamError) as e:
        parse_time("x", "from")
    assert isinstance(e.value, ApiError) and isinstance(e.value, TallyError)
    assert (e.value.status, e.value.param, e.value.retriable) == (400, "from", False)
    assert e.value.message == str(e.value) and str(e.value).startswith("from: ")


def test_times():
    assert parse_time("2025-11-25T00:00:00Z", "from") == H
    assert parse_time("2025-11-25T01:00:00+01:00", "from") == H
    assert parse_time(str(H), "to") == H
    for bad in ("", None, "2025-11-25", "2025-11-25T00:00:00", "2025-02-30T00:00:00Z", "-5",
                "1e12", "999", "99999999999999999", " 1764028800000", "2025-11-25T00:00:00Z ",
                "9999-12-31T00:00:00.001Z"):
        with pytest.raises(ParamError) as e:
            parse_time(bad, "from")
        assert str(e.value).startswith("from: ")


@pytest.mark.parametrize("gran,size", [("minute", MIN), ("hour", HOUR), ("day", DAY)])
def test_counts_floor_and_ceil(gran, size):
    q = parse_counts("v-1", {"from": str(H + 1), "to": str(H + size + 1), "granularity": gran}, CFG)
    assert (q.from_ms, q.to_ms) == (H, H + 2 * size)
    q = parse_counts("v-1", {"from": str(H), "to": str(H + size), "granularity": gran}, CFG)
    assert (q.from_ms, q.to_ms) == (H, H + size)
    assert q.event_type == "view"


def test_counts_defaults_and_errors():
    q = parse_counts("v_1", {"from": str(H), "to": str(H + 1)}, CFG)
    assert q.granularity == "hour" and q.event_type == "view"
    cases = [
        ("a b", {"from": str(H), "to": str(H + 1)}, "video_id"),
        ("x" * 65, {"from": str(H), "to": str(H + 1)}, "video_id"),
        ("v", {"from": str(H), "to": str(H)}, "to"),
        ("v", {"from": str(H + 5), "to": str(H)}, "to"),
        ("v", {"to": str(H)}, "from"),
        ("v", {"from": str(H)}, "to"),
        ("v", {"from": str(H), "to": str(H + 1), "granularity": "week"}, "granularity"),
        ("v", {"from": str(H), "to": str(H + 1), "event_type": "poke"}, "event_type"),
        # Present but empty is not the default.
        ("v", {"from": str(H), "to": str(H + 1), "event_type": ""}, "event_type"),
        ("v", {"from": str(H), "to": str(H + 1), "granularity": ""}, "granularity"),
        ("v", {"from": str(H), "to": str(H + 7 * DAY + 1), "granularity": "minute"}, "to"),
        ("v", {"from": str(H), "to": str(H + 400 * DAY + 1), "granularity": "hour"}, "to"),
        ("v", {"from": str(H), "to": str(H + 400 * DAY + 1), "granularity": "day"}, "to"),
    ]
    for vid, args, param in cases:
        with pytest.raises(ParamError) as e:
            parse_counts(vid, args, CFG)
        assert e.value.param == param, (vid, args, str(e.value))
    # The contract's minimum ranges are served.
    parse_counts("v", {"from": str(H), "to": str(H + 7 * DAY), "granularity": "minute"}, CFG)
    parse_counts("v", {"from": str(H), "to": str(H + 400 * DAY), "granularity": "hour"}, CFG)


def test_the_last_instant_ceils_to_a_writable_one():
    from schemas.event import format_ms

    q = parse_counts("v", {"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T00:00:00Z",
                           "granularity": "day"}, CFG)
    assert format_ms(q.to_ms) == "9999-12-31T00:00:00.000Z"
    q = parse_top({"from": "9999-12-30T23:59:59.999Z", "to": "9999-12-31T00:00:00Z"}, CFG)
    assert format_ms(q.to_ms) == "9999-12-31T00:00:00.000Z"


def test_top_params():
    q = parse_top({"from": str(H + 1), "to": str(H + MIN + 1)}, CFG)
    assert (q.from_ms, q.to_ms, q.k) == (H, H + 2 * MIN, 10)
    for k in ("0", "1001", "x", "-1", "1.5", "", " 5"):
        with pytest.raises(ParamError) as e:
            parse_top({"from": str(H), "to": str(H + 1), "k": k}, CFG)
        assert e.value.param == "k"
    assert parse_top({"from": str(H), "to": str(H + 1), "k": "1000"}, CFG).k == 1000


def test_config_limits_validated():
    from schemas.errors import ConfigError

    for env, key in [({"TALLY_SERVE__MAX_RANGE_DAYS_MINUTE": "6"}, "serve.max_range_days_minute"),
                     ({"TALLY_SERVE__MAX_RANGE_DAYS": "399"}, "serve.max_range_days"),
                     ({"TALLY_SERVE__MAX_EVENTS": "1001"}, "serve.max_events"),
                     ({"TALLY_SERVE__API_KEYS": "short"}, "serve.api_keys"),
                     ({"TALLY_SERVE__CATALOG_TTL_S": "-1"}, "serve.catalog_ttl_s")]:
        with pytest.raises(ConfigError) as e:
            load_config(environ=env)
        assert str(e.value).startswith(key), str(e.value)
    # A variable that names no setting is warned about, never an error (tests/unit/test_config.py).
    assert load_config(environ={"TALLY_SERVE__NOPE": "1"}) == load_config(environ={})
    cfg = load_config(environ={"TALLY_SERVE__READ_REQUIRES_KEY": "true",
                               "TALLY_SERVE__API_KEYS": "a" * 16 + "," + "b" * 20})
    assert cfg.serve.read_requires_key and len(cfg.serve.api_keys) == 2


# Merge planning ------------------------------------------------------------------------------

def laid_out(p):
    """The plan's buckets as an answer lays them out (Buckets over ``p.runs()``, as the counts
    endpoint writes them): [(start ms, source, beyond retention)]."""
    import numpy as np

    from serving_layer.buckets import Buckets

    n = (p.to_ms - p.from_ms) // p.size
    zeros = np.zeros(n, np.int64)
    return [(parse_rfc3339_ms(b["start"]), b["source"], b.get("beyond_retention", False))
            for b in Buckets(p.from_ms, p.to_ms, p.size, zeros, zeros, p.runs(), False)]


def batch_days(p):
    """The days whose published version answers part of the range (what counts and top-K read)."""
    return sorted({s.day for s in p.segments if s.source == "batch"})

@pytest.mark.parametrize("size", [MIN, HOUR, DAY])
def test_plan_splits_at_the_horizon(size):
    p = plan(H - 2 * DAY, H + 2 * DAY, size, H, now_ms=H + 3 * DAY, speed_ttl_days=7)
    assert p.parts("batch") == [Part(H - 2 * DAY, H)] and p.parts("speed") == [Part(H, H + 2 * DAY)]
    buckets = laid_out(p)
    assert len(buckets) == 4 * DAY // size
    assert [b for b, _, _ in buckets] == list(range(H - 2 * DAY, H + 2 * DAY, size))
    sources = [src for _, src, _ in buckets]
    # Every bucket exactly once, batch strictly before H, speed from H on.
    assert sources == ["batch"] * (2 * DAY // size) + ["speed"] * (2 * DAY // size)
    assert batch_days(p) == ["2025-11-23", "2025-11-24"]
    assert p.pending_days == ()


def test_plan_one_side_only_and_no_horizon():
    p = plan(H - DAY, H - HOUR, HOUR, H, H, 7)
    assert p.parts("batch") == [Part(H - DAY, H - HOUR)] and not p.parts("speed")
    p = plan(H + HOUR, H + DAY, HOUR, H, H, 7)
    assert not p.parts("batch") and p.parts("speed") == [Part(H + HOUR, H + DAY)]
    assert batch_days(p) == []
    p = plan(H - DAY, H + DAY, HOUR, None, H, 7)
    assert not p.parts("batch") and p.parts("speed") == [Part(H - DAY, H + DAY)]
    assert {src for _, src, _ in laid_out(p)} == {"speed"}


def test_plan_retention_flags_only_speed_buckets():
    now = H + 10 * DAY + 5
    p = plan(H - DAY, H + 10 * DAY, DAY, H, now, speed_ttl_days=7)
    flags = [beyond for _, _, beyond in laid_out(p)]
    # H-1d is batch (never flagged); H..H+3d start before now-7d (= H+3d+5ms).
    assert flags == [False, True, True, True, True, False, False, False, False, False, False]


@pytest.mark.parametrize("size", [MIN, HOUR, DAY])
def test_plan_pending_days(size):
    """A pending day with a version is answered by it; without one by the speed views where
    they still hold it, else zero (none); days around it stay batch; after H: speed."""
    d1, d2, d3 = "2025-11-22", "2025-11-23", "2025-11-24"  # H - 3d, H - 2d, H - 1d
    now = H + 5 * DAY - HOUR  # the retention floor (7 days) falls inside 2025-11-22
    p = plan(H - 4 * DAY, H + DAY, size, H, now, 7, pending={d1: False, d2: False, d3: True})
    assert p.pending_days == (d1, d2, d3)
    floor = now - 7 * DAY
    for b, src, beyond in laid_out(p):
        if b < H - 3 * DAY:
            assert src == "batch"
        elif b < H - 2 * DAY:  # d1: no version; before the floor nothing holds it
            assert src == ("speed" if b >= floor else "none") and not beyond
        elif b < H - DAY:
            assert src == "speed"  # d2: no version, within retention
        elif b < H:
            assert src == "batch"  # d3: its published version
        else:
            assert src == "speed"
    assert batch_days(p) == ["2025-11-21", d3]
    covered = sorted((s.lo, s.hi) for s in p.segments)
    assert covered[0][0] == H - 4 * DAY and covered[-1][1] == H + DAY
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # no gap, no overlap
    # Pending days outside the range are not listed.
    q = plan(H - DAY, H, size, H, now, 7, pending={d3: True})
    assert q.pending_days == (d3,)


def test_plan_rejects_unaligned():
    with pytest.raises(ValueError):
        plan(H + 1, H + HOUR, HOUR, H, H, 7)
    with pytest.raises(ValueError):
        plan(H, H + HOUR, HOUR, H + HOUR, H, 7)


def test_day_pieces_and_days():
    pieces = day_pieces(Part(H - HOUR, H + DAY + MIN))
    assert pieces == [("2025-11-24", H - HOUR, H, False), ("2025-11-25", H, H + DAY, True),
                      ("2025-11-26", H + DAY, H + DAY + MIN, False)]
    assert day_pieces(Part(H, H)) == []
    assert days_of(Part(H, H + DAY)) == ["2025-11-25"]


def test_bucket_starts_are_format_ms():
    from schemas.event import format_ms
    from serving_layer.buckets import bucket_starts

    for lo, hi, size in ((H - 3 * HOUR, H + 2 * HOUR, MIN), (H - 5 * DAY, H + DAY, HOUR),
                         (946_684_800_000, 946_684_800_000 + 3 * DAY, DAY),
                         (253_402_214_400_000 - DAY, 253_402_214_400_000, HOUR)):
        assert bucket_starts(lo, hi, size) == tuple(format_ms(b) for b in range(lo, hi, size))


def test_bucket_lists_written_from_templates_equal_the_dicts_they_stand_for():
    """Buckets' JSON (template % numbers) against the list written bucket by bucket, for
    random layouts: runs of batch, speed and none buckets, retention flags, an unreadable speed
    part."""
    import json
    import random

    import numpy as np
    from flask import Flask

    from schemas.event import format_ms
    from serving_layer.app import OrjsonProvider
    from serving_layer.buckets import Buckets

    rnd = random.Random(7)
    for _ in range(300):
        size = rnd.choice((MIN, HOUR, DAY))
        n = rnd.randint(1, 300)
        lo = H + rnd.randint(-400, 400) * size
        hi = lo + n * size
        cuts = sorted({0, n, *(rnd.randint(0, n) for _ in range(rnd.randint(0, 4)))})
        runs = tuple((a, b, rnd.choice(("batch", "speed", "none")), False)
                     for a, b in zip(cuts, cuts[1:]))
        runs = tuple((a, b, src, src == "speed" and rnd.random() < 0.3) for a, b, src, _ in runs)
        unavailable = rnd.random() < 0.3
        count = np.array([rnd.choice((0, 1, 7, 10**6, 2**53 + 1)) for _ in range(n)], np.int64)
        watch = np.array([rnd.randint(0, 2**62) for _ in range(n)], np.int64)
        want = []
        for a, end, src, beyond in runs:
            for i in range(a, end):
                b = {"start": format_ms(lo + i * size), "count": int(count[i]),
                     "watch_ms": int(watch[i]), "source": src}
                if src == "speed" and unavailable:
                    b.update(count=None, watch_ms=None, unavailable=True)
                if beyond:
                    b["beyond_retention"] = True
                want.append(b)
        got = Buckets(lo, hi, size, count, watch, runs, unavailable)
        assert json.loads(got.json()) == want
        assert list(got) == want and len(got) == n and got[n - 1] == want[-1]
        body = json.loads(OrjsonProvider(Flask("t")).dumps({"total": 1, "buckets": got}))
        assert body == {"total": 1, "buckets": want}


def test_rate_meter_sees_bursts_at_once_and_pauses_as_zero():
    from serving_layer.metrics import RateMeter

    now = [100.0]
    meter = RateMeter(1.0, clock=lambda: now[0])
    rates = []
    for _ in range(30):  # 30 events in 0.3 s: 30/s seen within the window already
        rates.append(meter.tick())
        now[0] += 0.01
    assert rates[0] == 1 and rates[-1] == 30
    now[0] = 101.0
    assert meter.tick() == 30  # the last whole window: 30 in 1 s
    now[0] = 101.5
    assert meter.tick() == 30
    now[0] = 105.0  # a pause of several windows: the rate falls to what is seen again
    assert meter.tick() == 1


def test_top_reads_the_coarsest_views():
    from serving_layer.service import _coarsest

    assert _coarsest(H, H + DAY, True) == [("day", H, H + DAY)]
    assert _coarsest(H + 5 * MIN, H + 50 * MIN, False) == [("minute", H + 5 * MIN, H + 50 * MIN)]
    assert _coarsest(H + 5 * MIN, H + 3 * HOUR + 7 * MIN, False) == [
        ("minute", H + 5 * MIN, H + HOUR), ("hour", H + HOUR, H + 3 * HOUR),
        ("minute", H + 3 * HOUR, H + 3 * HOUR + 7 * MIN)]
    assert _coarsest(H + HOUR, H + 3 * HOUR, False) == [("hour", H + HOUR, H + 3 * HOUR)]
