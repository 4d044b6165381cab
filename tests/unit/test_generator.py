"""The traffic generator against an independent recount of what it wrote."""

from __future__ import annotations

import collections
import time

import pyarrow.parquet as pq
import pytest

from schemas.errors import ValidationError
from schemas.event import EventValidator
from tally.cli import main
from tally.devstack.generator import INVALID_KINDS

WATERMARK = 600_000


def generate(tmp_path, name: str, *extra: str) -> tuple[list[bytes], object]:
    out, truth = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.parquet"
    rc = main(["-q", "--state-dir", str(tmp_path / "state"), "generate", "--events", "20000",
               "--videos", "300", "--start", "2026-11-01", "--days", "2", "--seed", "5",
               "--late", "0.02", "--duplicates", "0.05", "--invalid", "0.01",
               "--watermark-ms", str(WATERMARK), "--truth", str(truth), "--out", str(out), *extra])
    assert rc == 0
    return out.read_bytes().split(b"\n")[:-1], pq.read_table(truth)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("gen"), "a")


def recount(lines: list[bytes]):
    """Validate every line, keep the first copy of each event_id, mark late ones from the
    sending order itself, and count per (video, type, minute)."""
    v = EventValidator()
    clock = int(time.time() * 1000)
    seen: dict[str, dict] = {}
    late: set[str] = set()
    rejected: list[str] = []
    newest = None
    for raw in lines:
        try:
            e = v.validate_raw(raw, clock)
        except ValidationError as exc:
            rejected.append(str(exc))
            continue
        if e["event_id"] not in seen:
            seen[e["event_id"]] = e
            if newest is not None and newest - e["ts"] >= 2 * WATERMARK:
                late.add(e["event_id"])
        newest = e["ts"] if newest is None else max(newest, e["ts"])
    counts = collections.defaultdict(lambda: [0, 0, 0, 0])
    for eid, e in seen.items():
        c = counts[(e["video_id"], e["event_type"], e["ts"] // 60_000 * 60_000)]
        w = e["watch_ms"] or 0
        c[0] += 1
        c[1] += w
        if eid not in late:
            c[2] += 1
            c[3] += w
    return counts, rejected, seen, late


def test_same_seed_same_events(tmp_path, run):
    lines, _ = run
    again, _ = generate(tmp_path, "b")
    assert again == lines
    other, _ = generate(tmp_path, "c", "--seed", "6")
    assert other != lines


def test_truth_equals_recount(run):
    lines, truth = run
    counts, rejected, seen, late = recount(lines)
    assert len(seen) == 20000
    assert len(late) == pytest.approx(400, abs=40)
    rows = truth.to_pylist()
    got = {(r["video_id"], r["event_type"], int(r["minute"].timestamp() * 1000)):
           [r["count"], r["watch_ms"], r["count_ontime"], r["watch_ms_ontime"]] for r in rows}
    assert len(got) == len(rows)
    assert got == dict(counts)
    assert truth.column_names == ["video_id", "event_type", "minute", "count", "watch_ms",
                                  "count_ontime", "watch_ms_ontime"]
    assert str(truth.schema.field("minute").type) == "timestamp[ms, tz=UTC]"


def test_invalid_records_cover_every_kind(run):
    lines, _ = run
    _, rejected, _, _ = recount(lines)
    assert len(rejected) == 200
    # Every kind was produced, and together they break many different rules.
    assert 200 >= len(INVALID_KINDS)
    assert len(set(rejected)) >= 18


def test_sending_order_is_time_order_but_for_late_events_and_retries(run):
    lines, _ = run
    v = EventValidator()
    clock = int(time.time() * 1000)
    _, _, _, late = recount(lines)
    first_seen: set[str] = set()
    newest = None
    dup_lag = []
    for raw in lines:
        try:
            e = v.validate_raw(raw, clock)
        except ValidationError:
            continue
        if e["event_id"] in first_seen:  # a retry: shortly after its original
            dup_lag.append(newest - e["ts"])
            continue
        first_seen.add(e["event_id"])
        if e["event_id"] in late:
            continue
        assert newest is None or e["ts"] >= newest, "on-time events out of order"
        newest = e["ts"]
    assert len(dup_lag) == 1000
    assert max(dup_lag) < 5_000


def test_rejects_a_range_in_the_future(tmp_path, capsys):
    rc = main(["-q", "--state-dir", str(tmp_path), "generate", "--events", "10", "--videos", "2",
               "--start", "2099-01-01", "--out", str(tmp_path / "x")])
    assert rc == 1
    assert "--start/--days" in capsys.readouterr().err


def test_popularity_is_skewed(run):
    lines, truth = run
    per_video = collections.Counter()
    for r in truth.to_pylist():
        per_video[r["video_id"]] += r["count"]
    ranked = [c for _, c in per_video.most_common()]
    assert ranked[0] > 10 * ranked[len(ranked) // 2]


def test_restamped_retries_are_later_copies_and_the_truth_counts_the_earlier_day(tmp_path):
    """--restamp-ms: every retry copy is stamped after its original (some across midnight); the
    truth is the contract's rule applied independently: per event_id the copy on the earliest
    day counts, within a day the first one sent."""
    from schemas.event import parse_rfc3339_ms

    lines, truth = generate(tmp_path, "restamp", "--restamp-ms", "3600000")
    v = EventValidator()
    clock = int(time.time() * 1000)
    copies: dict[str, list[dict]] = collections.defaultdict(list)
    for raw in lines:
        try:
            e = v.validate_raw(raw, clock)
        except ValidationError:
            continue
        copies[e["event_id"]].append(e)
    retried = {k: c for k, c in copies.items() if len(c) > 1}
    assert retried and all(c[1]["ts"] > c[0]["ts"] for c in retried.values())
    day = lambda e: e["ts"] // 86_400_000  # noqa: E731
    assert any(day(c[1]) != day(c[0]) for c in retried.values())  # some cross midnight
    want: collections.Counter = collections.Counter()
    for c in copies.values():
        first_day = min(day(e) for e in c)
        counted = next(e for e in c if day(e) == first_day)  # the first sent on that day
        want[(counted["video_id"], counted["event_type"], counted["ts"] // 60_000 * 60_000)] += 1
    got = {(r["video_id"], r["event_type"], int(r["minute"].timestamp() * 1000)): r["count"]
           for r in truth.to_pylist()}
    assert got == dict(want)

