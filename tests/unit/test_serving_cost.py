"""The work one request may cause is bounded: no speed reads for hours that cannot hold data
(after now + the accepted skew), no work per empty hour, no file per distinct query, and the
whole days of a top-K range summed once, whatever its ends. Counted with a fake speed store (the
calls it gets) over a real file:// lake."""

from __future__ import annotations

import pytest

from schemas.config import load_config
from serving_layer import service
from serving_layer.app import create_app
from serving_layer.batch import IndexedView
from serving_layer.params import parse_counts, parse_top
from speed_layer.store import MinuteCount
from tests.unit.test_serving_app import D0_MS, DAY, HOUR, MIN, FakeSpeed, iso, publish

NOW = D0_MS + 2 * DAY + 10 * HOUR + 30 * MIN  # the fake's watermark is 09:50 that day
DATA_CALLS = ("read_minutes", "scan_type_minutes", "hour_minutes", "hour_totals")


class CountingSpeed(FakeSpeed):
    def __init__(self, rows):
        super().__init__(rows)
        self.data_calls: list[tuple] = []
        for name in DATA_CALLS:
            real = getattr(self, name)
            setattr(self, name, self._counted(name, real))

    def _counted(self, name, real):
        def call(*args):
            self.data_calls.append((name, *args))
            return real(*args)
        return call


def world(tmp_path, days=0, rows=()):
    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path),
                                             "serve": {"catalog_ttl_s": 0.0}})
    for d in range(days):
        day = iso(D0_MS - (days - d) * DAY)[:10]
        publish(cfg, day, f"20251101T000000Z-{d:08d}",
                [("v1", "view", D0_MS - (days - d) * DAY + 5 * MIN, 1 + d, 10),
                 ("v2", "view", D0_MS - (days - d) * DAY + HOUR, 2, 20)])
    (tmp_path / "lake").mkdir(exist_ok=True)  # as `tally stack up` leaves a new installation
    app = create_app(cfg)
    res = app.extensions["tally"]["resources"]
    res._speed = CountingSpeed(rows)
    return cfg, res


def hour_files(cfg) -> list[str]:
    d = cfg.state_path / "run" / "top-hours"
    return sorted(p.name for p in d.iterdir() if p.suffix == ".arrow") if d.exists() else []


def test_a_400_day_top_k_in_the_future_reads_nothing_and_writes_no_file(tmp_path):
    cfg, res = world(tmp_path)
    q = parse_top({"from": iso(NOW + DAY), "to": iso(NOW + 400 * DAY), "k": "10"}, cfg)
    body = service.top(res, q, NOW)
    assert "speed_unavailable" in body and body["items"] == []
    assert res._speed.data_calls == [] and hour_files(cfg) == []
    # Counts too: every bucket listed, none read.
    cq = parse_counts("v1", {"from": iso(NOW + DAY), "to": iso(NOW + 400 * DAY)}, cfg)
    body = service.counts(res, cq, NOW)
    assert not body["speed_unavailable"] and len(body["buckets"]) == 399 * 24 + 1 and body["total"] == 0
    assert res._speed.data_calls == []


@pytest.mark.parametrize("watermark", [None, "2025-11-26T09:50:00Z"])
def test_a_400_day_top_k_over_an_empty_installation_reads_once(tmp_path, watermark):
    """Nothing published (everything from the speed views): one scan per kind of hour, not one
    per hour; files only for the few open hours near now, the same for every query."""
    cfg, res = world(tmp_path, rows=[("v1", "view", NOW - 5 * MIN, 4, 40)])
    res._speed.watermark = watermark
    seen_files = set()
    for shift in (0, 7 * MIN, 3 * DAY + 11 * MIN):
        res._speed.data_calls.clear()
        q = parse_top({"from": iso(NOW - 399 * DAY + shift), "to": iso(NOW + HOUR + shift),
                       "k": "10"}, cfg)
        body = service.top(res, q, NOW)
        assert not body["speed_unavailable"] and body["items"] == [{"video_id": "v1", "count": 4, "watch_ms": 40}]
        assert len(res._speed.data_calls) <= 2 + service.SHARED_OPEN_HOURS + 3, res._speed.data_calls
        seen_files |= set(hour_files(cfg))
    assert len(seen_files) <= service.SHARED_OPEN_HOURS + 3, seen_files


def test_moving_an_end_of_a_long_top_k_by_a_minute_sums_only_the_ends(tmp_path, monkeypatch):
    cfg, res = world(tmp_path, days=12)
    sums = []
    real = IndexedView.per_video_table
    monkeypatch.setattr(IndexedView, "per_video_table",
                        lambda self, *a: sums.append(a) or real(self, *a))
    start = D0_MS - 12 * DAY
    expected = {"v1": sum(1 + d for d in range(12)), "v2": 24}
    for i, end in enumerate((D0_MS - 30 * MIN, D0_MS - 29 * MIN, D0_MS - 28 * MIN)):
        sums.clear()
        q = parse_top({"from": iso(start + 3 * MIN), "to": iso(end), "k": "5"}, cfg)
        body = service.top(res, q, NOW)
        # The first minutes of day 0 (v1's 5th minute counted) and all of day 11 but its last
        # half hour.
        assert {x["video_id"]: x["count"] for x in body["items"]} == expected
        if i == 0:
            assert len(sums) >= 10  # every whole day once
        else:
            assert len(sums) <= 2, sums  # the minute end of the last day only


def test_counts_over_a_long_range_cache_days_not_hours(tmp_path):
    """With the watermark far on, 30 closed days of the speed part are 30 cache entries."""
    rows = [("v1", "view", D0_MS + 3 * HOUR, 1, 1)]
    cfg, res = world(tmp_path, rows=rows)
    res._speed.watermark = iso(D0_MS + 40 * DAY)
    now = D0_MS + 40 * DAY + HOUR
    cq = parse_counts("v1", {"from": iso(D0_MS), "to": iso(D0_MS + 30 * DAY)}, cfg)
    body = service.counts(res, cq, now)
    assert body["total"] == 1
    assert len(res.counts_cache) == 30
    res._speed.data_calls.clear()
    assert service.counts(res, cq, now)["total"] == 1
    assert res._speed.data_calls == []  # all kept: closed days cannot change
