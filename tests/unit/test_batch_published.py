"""The horizon, pending and pinned days (batch_layer.published) against the contract's rules,
on hand-made publication logs and index states."""

from __future__ import annotations

from batch_layer.entry import PublicationEntry
from batch_layer.published import BatchState, day_number, latest_closed_day
from speed_layer.archive_index import DaySummary, IndexState

DAY = 86_400_000
LATENESS = 15 * 60_000
NOW = (day_number("2026-11-30") + 1) * DAY + 3 * 3_600_000  # 2026-12-01T03:00Z


def entry(day, seq, closed=True, seen=None, pinned=False, rows=0):
    return {"day": day, "seq": seq, "version": f"v{day}-{seq}", "closed": closed, "pinned": pinned,
            "input": {"raw_rows": rows, "seen": seen if seen is not None else {}}}


def state(log: dict[str, list[dict]], index: dict[str, tuple[int, int]], now=NOW, span=1, start=""):
    """``log``: day -> entries in order; ``index``: day -> (raw rows, last_seq)."""
    idx = IndexState(seq=max([s for _r, s in index.values()], default=0),
                     days={d: DaySummary(d, r, 1, s, 0, 0) for d, (r, s) in index.items()})
    published = {d: len(es) for d, es in log.items()}
    # The log's JSON documents, parsed as every reader gets them.
    return BatchState(published, idx, lambda d, seq: PublicationEntry.parse(log[d][seq - 1]), now,
                      LATENESS, span, start)


def test_latest_closed_day():
    assert latest_closed_day(NOW, LATENESS) == "2026-11-30"
    assert latest_closed_day((day_number("2026-12-01")) * DAY + 60_000, LATENESS) == "2026-11-29"


def test_horizon_is_the_latest_closed_publication_and_never_moves_back():
    s = state({"2026-11-20": [entry("2026-11-20", 1)], "2026-11-28": [entry("2026-11-28", 1)]}, {})
    assert s.horizon_ms == (day_number("2026-11-28") + 1) * DAY  # not stopped by the gap
    # A forced version of an open day (today) does not move it...
    s = state({"2026-11-28": [entry("2026-11-28", 1)],
               "2026-12-01": [entry("2026-12-01", 1, closed=False)]}, {})
    assert s.horizon_ms == (day_number("2026-11-28") + 1) * DAY
    # ... and a closed one cannot pass the end of the latest day closed by time.
    s = state({"2026-12-01": [entry("2026-12-01", 1, closed=True)]}, {})
    assert s.horizon_ms is None
    # A rollback to a version of the latest day (a later entry) keeps the horizon where it was.
    s = state({"2026-11-28": [entry("2026-11-28", 1), entry("2026-11-28", 2, closed=False, pinned=True)]}, {})
    assert s.horizon_ms == (day_number("2026-11-28") + 1) * DAY
    assert state({}, {"2026-11-20": (5, 1)}).horizon_ms is None  # nothing published: none


def test_pending_days():
    seen27 = {"2026-11-26": 0, "2026-11-27": 3}
    log = {"2026-11-27": [entry("2026-11-27", 1, seen=seen27)],
           "2026-11-28": [entry("2026-11-28", 1, seen={"2026-11-27": 3, "2026-11-28": 4})],
           "2026-11-29": [entry("2026-11-29", 1, seen={"2026-11-28": 4, "2026-11-29": 5})]}
    lo, hi = day_number("2026-11-20") * DAY, (day_number("2026-11-30") + 1) * DAY
    s = state(log, {"2026-11-27": (10, 3), "2026-11-28": (10, 4), "2026-11-29": (10, 5)})
    assert s.pending_days(lo, hi) == []
    # Late raw data for 11-27 (segment 6): 11-27 and, through its dedup span, 11-28 are pending.
    s = state(log, {"2026-11-27": (11, 6), "2026-11-28": (10, 4), "2026-11-29": (10, 5)})
    assert s.pending_days(lo, hi) == ["2026-11-27", "2026-11-28"]
    # A day with raw data and no version before the horizon (a buffered upload): pending; one
    # with raw data after the horizon is not (the speed views answer it).
    s = state(log, {"2026-11-21": (1, 7), "2026-11-27": (10, 3), "2026-11-28": (10, 4),
                    "2026-11-29": (10, 5), "2026-11-30": (9, 8)})
    assert s.pending_days(lo, hi) == ["2026-11-21"]
    assert s.pending_days(day_number("2026-11-22") * DAY, hi) == []  # only days in the range
    # Before batch.horizon_start: neither pending nor anything else.
    s = state(log, {"2026-11-21": (1, 7)}, start="2026-11-25")
    assert s.pending_days(lo, hi) == []


def test_pinned_days_are_not_pending():
    log = {"2026-11-28": [entry("2026-11-28", 1, seen={"2026-11-28": 4}),
                          entry("2026-11-28", 2, seen={"2026-11-28": 4}, pinned=True)],
           "2026-11-29": [entry("2026-11-29", 1, seen={"2026-11-29": 5})]}
    s = state(log, {"2026-11-28": (20, 9), "2026-11-29": (10, 5)})
    lo, hi = day_number("2026-11-28") * DAY, (day_number("2026-11-30")) * DAY
    # The pinned day got raw data its version lacks: not pending itself, but the next day's
    # deduplication looks at it, so that one is.
    assert s.pending_days(lo, hi) == ["2026-11-29"]
    assert s.pinned_days(lo, hi) == ["2026-11-28"]
    assert not s.needs_run("2026-11-28") and s.needs_run("2026-11-29")


def test_entries_from_before_the_index_compare_raw_rows():
    old = {"day": "2026-11-28", "seq": 1, "version": "v", "computed_at": "2026-11-29T02:30:00.000Z",
           "input": {"raw_rows": 10}}
    s = state({"2026-11-28": [old]}, {"2026-11-28": (10, 1)})
    assert s.horizon_ms == (day_number("2026-11-28") + 1) * DAY  # computed after its end: closed
    assert s.pending_days(0, s.horizon_ms) == []
    s = state({"2026-11-28": [old]}, {"2026-11-28": (12, 2)})
    assert s.pending_days(0, s.horizon_ms) == ["2026-11-28"]


def test_a_pinned_day_is_left_out_of_the_next_days_deduplication():
    """D pinned: D+1's version must have left D out (else it is pending), and then new raw data
    on D does not make it pending; once D is unpinned, D+1 is pending again."""
    d, d1 = "2026-11-28", "2026-11-29"
    pinned = [entry(d, 1, seen={d: 4}), entry(d, 2, seen={d: 4}, pinned=True)]
    idx = {d: (20, 9), d1: (10, 5)}
    lo, hi = day_number(d) * DAY, (day_number(d1) + 1) * DAY
    kept = {d: pinned, d1: [entry(d1, 1, seen={d: 4, d1: 5})]}  # computed with D in its input
    assert state(kept, idx).pending_days(lo, hi) == [d1]
    left_out = {d: pinned, d1: [{**entry(d1, 1, seen={d1: 5}),
                                 "input": {"raw_rows": 0, "seen": {d1: 5}, "pinned_span_days": [d]}}]}
    assert state(left_out, idx).pending_days(lo, hi) == []
    unpinned = {d: pinned + [entry(d, 3, seen={d: 9})], d1: left_out[d1]}
    assert state(unpinned, idx).pending_days(lo, hi) == [d1]
