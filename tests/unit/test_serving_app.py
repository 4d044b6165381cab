"""The app over a real file:// lake and fake speed store / producer (no services): one snapshot
of the publication log per request, the per-worker view cache keyed by version, the merge, the
HBase-down flags, ingest acknowledgement and its failure."""

from __future__ import annotations

import json

import pytest

from schemas.config import load_config
from schemas.errors import DependencyError, ProducerError
from serving_layer import service
from serving_layer.app import create_app
from serving_layer.batch import IndexedView
from serving_layer.cache import ByteCache
from serving_layer.params import parse_counts, parse_top
from serving_layer.sizes import ENTRY, key_bytes
from speed_layer import open_speed_views
from speed_layer.views import DayCounters, MinuteCount, Progress, SpeedViews
from tally.devstack.worlds import publish_minutes, view_table

DAY, HOUR, MIN = 86_400_000, 3_600_000, 60_000
D0 = "2025-11-24"
D0_MS = 1_763_942_400_000


def publish(cfg, day, version, minute_rows):
    publish_minutes(cfg, day, minute_rows, version=version)


class FakeSpeed:
    def __init__(self, rows, fail=False):
        self.rows = [MinuteCount(*r) for r in rows]
        self.fail = fail
        self.calls = 0
        self.scans = []
        self.hour_reads = []
        self.total_reads = []
        self.progress_reads = 0
        self.watermark = "2025-11-26T09:50:00Z"

    def _check(self):
        self.calls += 1
        if self.fail:
            raise DependencyError("hbase", "connection refused")

    def read_minutes(self, video_id, event_type, lo, hi):
        self._check()
        self.scans.append((lo, hi))
        return [r for r in self.rows if (r.video_id, r.event_type) == (video_id, event_type)
                and lo <= r.minute_ms < hi]

    def scan_type_minutes(self, event_type, lo, hi):
        self._check()
        return [r for r in self.rows if r.event_type == event_type and lo // HOUR * HOUR <= r.minute_ms]

    def hour_minutes(self, event_type, hour_ms):
        self._check()
        self.hour_reads.append(hour_ms)
        rows = sorted((r for r in self.rows
                       if r.event_type == event_type and hour_ms <= r.minute_ms < hour_ms + HOUR),
                      key=lambda r: r.video_id)
        return ([r.video_id for r in rows], [(r.minute_ms - hour_ms) // MIN for r in rows],
                [r.count for r in rows], [r.watch_ms for r in rows])

    def hour_totals(self, event_type, lo, hi):
        self._check()
        self.total_reads.append((lo, hi))
        sums = {}
        for r in self.rows:
            if r.event_type == event_type and lo <= r.minute_ms < hi:
                key = (r.minute_ms // HOUR * HOUR, r.video_id)
                c, w = sums.get(key, (0, 0))
                sums[key] = (c + r.count, w + r.watch_ms)
        keys = sorted(sums)
        return ([h for h, _ in keys], [v for _, v in keys], [sums[k][0] for k in keys],
                [sums[k][1] for k in keys])

    def progress(self):
        self._check()
        self.progress_reads += 1
        return Progress.parse({"max_event_time": "2025-11-26T10:00:00.000Z", "watermark": self.watermark,
                               "updated_at": f"2025-11-26T10:00:{1 + self.progress_reads:02d}Z"})

    def day_counters(self, day):
        self._check()
        return DayCounters()

    def check(self):
        self._check()
        return "fake speed views"


def test_the_stand_in_and_the_store_offer_the_speed_read_interface(tmp_path):
    from speed_layer.store import HBaseSpeedStore

    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path)})
    assert isinstance(FakeSpeed([]), SpeedViews)
    assert isinstance(open_speed_views(cfg, timeout_ms=1234), HBaseSpeedStore)
    assert isinstance(open_speed_views(cfg), SpeedViews)
    assert open_speed_views(cfg, timeout_ms=1234).cfg.hbase.timeout_ms == 1234
    p = Progress.parse({"batch_id": 7, "watermark": "2025-11-26T09:50:00Z", "dropped_late": 3})
    assert (p.batch_id, p.watermark_ms, p.dropped_late, p.max_event_time_ms) == \
        (7, D0_MS + 2 * DAY + 9 * HOUR + 50 * MIN, 3, None)
    assert p.times["speed_watermark"] == "2025-11-26T09:50:00.000Z"


@pytest.fixture
def setup(tmp_path):
    cfg = load_config(environ={}, overrides={
        "state_dir": str(tmp_path), "batch": {"horizon_start": D0},
        "serve": {"catalog_ttl_s": 0.0}})
    batch_rows = [("v1", "view", D0_MS + 5 * MIN, 3, 30), ("v1", "view", D0_MS + HOUR + 1 * MIN, 2, 20),
                  ("v2", "view", D0_MS + 7 * MIN, 9, 90), ("v1", "like", D0_MS + 7 * MIN, 1, 0)]
    publish(cfg, D0, "20251125T000000Z-aaaaaaaa", batch_rows)
    speed_rows = [("v1", "view", D0_MS + DAY + 2 * MIN, 4, 40), ("v1", "view", D0_MS + DAY + HOUR, 1, 10),
                  ("v2", "view", D0_MS + DAY + 3 * MIN, 1, 1),
                  # Wrong on purpose: before the horizon, must never be used.
                  ("v1", "view", D0_MS + 5 * MIN, 999, 999)]
    app = create_app(cfg)
    res = app.extensions["tally"]["resources"]
    res._speed = FakeSpeed(speed_rows)
    return cfg, app, res


def iso(ms):
    from schemas.event import format_ms

    return format_ms(ms)


def test_counts_merge_and_one_snapshot_per_request(setup, monkeypatch):
    cfg, app, res = setup
    c = app.test_client()
    listings = []
    real = res.batch.views.published_days
    monkeypatch.setattr(res.batch.views, "published_days", lambda: listings.append(1) or real())
    r = c.get("/v1/videos/v1/counts", query_string={
        "from": iso(D0_MS + 30_000), "to": iso(D0_MS + DAY + 2 * HOUR - 1), "granularity": "hour"})
    assert r.status_code == 200, r.json
    b = r.json
    assert len(listings) == 1  # one listing of the log for the whole request
    assert b["from"] == iso(D0_MS) and b["to"] == iso(D0_MS + DAY + 2 * HOUR)
    assert b["batch_horizon"] == iso(D0_MS + DAY)
    assert b["batch_versions"] == {D0: "20251125T000000Z-aaaaaaaa"}
    assert len(b["buckets"]) == 26
    got = {x["start"]: (x["count"], x["watch_ms"], x["source"]) for x in b["buckets"] if x["count"]}
    assert got == {iso(D0_MS): (3, 30, "batch"), iso(D0_MS + HOUR): (2, 20, "batch"),
                   iso(D0_MS + DAY): (4, 40, "speed"), iso(D0_MS + DAY + HOUR): (1, 10, "speed")}
    assert [x["source"] for x in b["buckets"]] == ["batch"] * 24 + ["speed"] * 2
    assert (b["total"], b["watch_ms"]) == (10, 100)
    assert b["freshness"]["speed_watermark"] == "2025-11-26T09:50:00.000Z"


@pytest.mark.parametrize("cache_mb", [64, 0])
def test_counts_keep_closed_speed_hours_and_read_the_open_ones(setup, cache_mb):
    cfg, app, res = setup
    # Open hours scanned by every request (the shared snapshots: the next test).
    res.cfg = cfg.replace(serve={"counts_cache_mb": cache_mb, "counts_open_shared": False})
    speed = res._speed
    start = D0_MS + 2 * DAY  # after the horizon; the speed watermark is 09:50 that day
    speed.rows += [MinuteCount("v1", "view", start + HOUR, 1, 10),
                   MinuteCount("v1", "view", start + 9 * HOUR + 55 * MIN, 7, 70),
                   MinuteCount("v1", "view", start + 11 * HOUR, 2, 0)]
    c = app.test_client()
    q = {"from": iso(start + 30 * MIN), "to": iso(start + 12 * HOUR), "granularity": "minute"}

    def answer():
        r = c.get("/v1/videos/v1/counts", query_string=q)
        assert r.status_code == 200, r.json
        return {x["start"]: (x["count"], x["watch_ms"]) for x in r.json["buckets"] if x["count"]}

    first = answer()
    assert first == {iso(start + HOUR): (1, 10), iso(start + 9 * HOUR + 55 * MIN): (7, 70),
                     iso(start + 11 * HOUR): (2, 0)}
    # One contiguous scan; with the cache from the hour's start, so that 00:00 can be kept too.
    assert speed.scans == [(start + (0 if cache_mb else 30 * MIN), start + 12 * HOUR)]
    # Changed rows: the closed hour 01:00 cannot change in the real store (a later event is
    # dropped as late); the open hour 11:00 can.
    speed.rows = [r for r in speed.rows if r.minute_ms not in (start + HOUR, start + 11 * HOUR)]
    speed.rows += [MinuteCount("v1", "view", start + HOUR, 50, 0),
                   MinuteCount("v1", "view", start + 11 * HOUR, 3, 0)]
    second = answer()
    if cache_mb:
        # 00:00 to 08:00 come from the cache, the scan starts at the hour still open at the
        # watermark.
        assert speed.scans[1] == (start + 9 * HOUR, start + 12 * HOUR)
        assert second == {**first, iso(start + 11 * HOUR): (3, 0)}
    else:
        assert speed.scans[1] == speed.scans[0]
        assert second == {**first, iso(start + HOUR): (50, 0), iso(start + 11 * HOUR): (3, 0)}
    assert len(speed.scans) == 2


def test_open_hours_come_from_one_snapshot_shared_by_the_workers(setup):
    """Top-K (and counts, unless serve.counts_open_shared is off) take the hours still open from one
    snapshot per host and top_ttl_s; the answer's freshness is that snapshot's progress record."""
    cfg, app, res = setup
    cfg = cfg.replace(serve={"counts_open_shared": True, "counts_shared_min_rate": 0.0,
                             "top_ttl_s": 60.0})
    res.cfg = cfg
    start = D0_MS + 2 * DAY  # the watermark is 09:50 that day: 09:00 on is open
    speed = res._speed
    speed.rows += [MinuteCount("v1", "view", start + HOUR, 1, 10),
                   MinuteCount("v1", "view", start + 9 * HOUR + 55 * MIN, 7, 70),
                   MinuteCount("v2", "view", start + 10 * HOUR + 5 * MIN, 9, 0),
                   MinuteCount("v1", "view", start + 10 * HOUR + 6 * MIN, 2, 0)]
    now = start + 10 * HOUR + 30 * MIN
    q = {"from": iso(start), "to": iso(start + 12 * HOUR)}
    def snapshots() -> int:  # scans of the open hours (closed ones are read once per worker)
        return sum(1 for h in speed.hour_reads if h >= start + 9 * HOUR)

    top = service.top(res, parse_top(q, cfg), now)
    assert top["items"] == [{"video_id": "v1", "count": 10, "watch_ms": 80},
                            {"video_id": "v2", "count": 9, "watch_ms": 0}]
    # Hours 09:00, 10:00 and 11:00 are open: one snapshot each, the progress record read before
    # each; the answer is as fresh as the oldest of them.
    assert snapshots() == 3
    assert top["freshness"]["speed_updated_at"] == "2025-11-26T10:00:03.000Z"
    cq = parse_counts("v1", {**q, "granularity": "hour"}, cfg)
    body = service.counts(res, cq, now)
    assert [b["count"] for b in body["buckets"]][:12] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 2, 0]
    # The open hours were not scanned: the one scan covers the closed hours only.
    assert speed.scans == [(start, start + 9 * HOUR)] and snapshots() == 3
    assert body["freshness"]["speed_updated_at"] == "2025-11-26T10:00:03.000Z"
    # Another worker of the host (its own resources, the same state directory) reads the files.
    other = service.Resources(cfg)
    other._speed = speed
    assert service.top(other, parse_top(q, cfg), now)["items"] == top["items"]
    assert snapshots() == 3
    # Off, or on in a worker answering fewer counts requests per second than
    # serve.counts_shared_min_rate: counts scan their open hours on every request.
    for serve in ({"counts_open_shared": False}, {"counts_shared_min_rate": 1e9}):
        res.cfg = cfg.replace(serve=serve)
        scans = len(speed.scans)
        assert [b["count"] for b in service.counts(res, cq, now)["buckets"]][9:11] == [7, 2]
        # ... up to now + events.max_future + a minute: no row can lie after that.
        assert speed.scans[scans:] == [(start + 9 * HOUR, start + 11 * HOUR + 31 * MIN)]


def test_a_new_publication_is_picked_up_and_cached_by_version(setup):
    cfg, app, res = setup
    c = app.test_client()
    q = {"from": iso(D0_MS), "to": iso(D0_MS + DAY), "granularity": "day"}
    assert c.get("/v1/videos/v1/counts", query_string=q).json["total"] == 5
    assert c.get("/v1/videos/v1/counts", query_string=q).json["total"] == 5
    assert res.batch.view_cache.misses == 1 and res.batch.view_cache.hits == 1
    publish(cfg, D0, "20251125T010000Z-bbbbbbbb", [("v1", "view", D0_MS, 11, 1)])
    b = c.get("/v1/videos/v1/counts", query_string=q).json
    assert b["total"] == 11 and b["batch_versions"] == {D0: "20251125T010000Z-bbbbbbbb"}
    # The next day published moves the horizon: its buckets are now batch (empty view = zeros).
    publish(cfg, "2025-11-25", "20251126T000000Z-cccccccc", [])
    b = c.get("/v1/videos/v1/counts", query_string={**q, "to": iso(D0_MS + 2 * DAY)}).json
    assert b["batch_horizon"] == iso(D0_MS + 2 * DAY)
    assert [(x["count"], x["source"]) for x in b["buckets"]] == [(11, "batch"), (0, "batch")]


def test_hbase_down_flags_and_503(setup):
    cfg, app, res = setup
    res._speed.fail = True
    c = app.test_client()
    r = c.get("/v1/videos/v1/counts", query_string={
        "from": iso(D0_MS), "to": iso(D0_MS + 2 * DAY), "granularity": "day"})
    assert r.status_code == 200
    assert r.json["speed_unavailable"] and r.json["partial"]
    assert [(x["count"], x["source"], x.get("unavailable", False)) for x in r.json["buckets"]] == \
        [(5, "batch", False), (None, "speed", True)]
    r = c.get("/v1/videos/v1/counts", query_string={"from": iso(D0_MS + DAY), "to": iso(D0_MS + 2 * DAY)})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json["dependency"] == "hbase" and r.json["error"].startswith("hbase: connection refused")
    assert r.json["error"].endswith("(the whole range is answered by the speed views)")
    # Entirely before the horizon: no speed needed, answered, freshness unknown.
    r = c.get("/v1/videos/v1/counts", query_string={"from": iso(D0_MS), "to": iso(D0_MS + DAY)})
    assert r.status_code == 200 and r.json["total"] == 5 and not r.json["speed_unavailable"]
    assert r.json["freshness"]["speed_max_event_time"] is None


def test_top_merges_and_orders_ties_by_video(setup):
    cfg, app, res = setup
    c = app.test_client()
    r = c.get("/v1/top", query_string={"from": iso(D0_MS), "to": iso(D0_MS + 2 * DAY), "k": 5})
    # A tie on count (batch 5 + speed 5 against batch 9 + speed 1) is ordered by video_id.
    assert r.json["items"] == [{"video_id": "v1", "count": 10, "watch_ms": 100},
                               {"video_id": "v2", "count": 10, "watch_ms": 91}]
    assert r.json["exact"] is False
    r = c.get("/v1/top", query_string={"from": iso(D0_MS + 6 * MIN), "to": iso(D0_MS + HOUR)})
    assert [(i["video_id"], i["count"]) for i in r.json["items"]] == [("v2", 9)]
    assert r.json["exact"] is True


class FakeProducer:
    def __init__(self, fail=False):
        self.sent = []
        self.flushed = 0
        self.fail = fail

    def send_raw(self, value, key):
        self.sent.append((key, value))

    def flush(self, timeout_s=None):
        self.flushed += 1
        if self.fail:
            raise ProducerError("kafka: 1 event(s) not acknowledged", retriable=True)
        return len(self.sent)


def test_ingest_acknowledged_and_kafka_failure(setup):
    cfg, app, res = setup
    res._producer = FakeProducer()
    c = app.test_client()
    ev = {"event_id": "e1", "video_id": "v1", "event_type": "view", "ts": "2025-11-25T00:00:00Z",
          "new_field": 1}
    r = c.post("/v1/events", json=[ev, {"event_id": "e2"}])
    assert r.status_code == 202 and r.json == {
        "accepted": 1, "rejected": [{"index": 1, "error": "video_id: required"}]}
    assert res._producer.flushed == 1
    assert res._producer.sent[0][0] == b"v1" and b'"new_field":1' in res._producer.sent[0][1]
    from prometheus_client import REGISTRY

    def failed() -> float:
        return REGISTRY.get_sample_value("tally_ingest_events_total", {"outcome": "failed"})

    before = failed()
    res._producer = FakeProducer(fail=True)
    r = c.post("/v1/events", json=[ev, {**ev, "event_id": "e3"}, {"event_id": "bad"}])
    assert r.status_code == 503 and r.json["dependency"] == "kafka" and r.headers["Retry-After"]
    assert res._producer is None  # a fresh client on the next request
    assert failed() == before + 2  # the valid events Kafka did not acknowledge


def test_ingest_rejects_a_lone_surrogate_alone(setup):
    """A lone surrogate (which no UTF-8 encoder writes and the stream refuses) in one event of an
    array rejects that event only, as not valid JSON: never a 500, never half sent."""
    cfg, app, res = setup
    res._producer = FakeProducer()
    ev = {"event_id": "e1", "video_id": "v1", "event_type": "view", "ts": "2025-11-25T00:00:00Z"}
    bad = '{"event_id":"e2","video_id":"v1","event_type":"view","ts":"2025-11-25T00:00:00Z",' \
          '"note":"\\ud800"}'
    body = "[" + ",".join([json.dumps(ev), bad, json.dumps({**ev, "event_id": "e3"})]) + "]"
    r = app.test_client().post("/v1/events", data=body, content_type="application/json")
    assert r.status_code == 202, r.json
    assert r.json == {"accepted": 2, "rejected": [{"index": 1, "error": "event: not valid JSON"}]}
    assert [json.loads(v)["event_id"] for _, v in res._producer.sent] == ["e1", "e3"]
    # Alone, it is a 400 naming it.
    res._producer = FakeProducer()
    r = app.test_client().post("/v1/events", data=bad, content_type="application/json")
    assert r.status_code == 400 and r.json["rejected"] == [
        {"index": 0, "error": "event: not valid JSON"}]
    assert res._producer.sent == []


def test_ingest_sends_nothing_when_an_event_cannot_be_serialized(setup, monkeypatch):
    """Every accepted event is serialized before the first is sent: one that cannot be is a 400
    naming it, and Kafka received nothing of the request."""
    from serving_layer import ingest

    cfg, app, res = setup
    res._producer = FakeProducer()
    real = ingest.to_json

    def failing(event):
        if event.get("event_id") == "e2":
            raise TypeError("injected")
        return real(event)

    monkeypatch.setattr(ingest, "to_json", failing)
    evs = [{"event_id": f"e{i}", "video_id": "v1", "event_type": "view",
            "ts": "2025-11-25T00:00:00Z"} for i in range(1, 4)]
    r = app.test_client().post("/v1/events", json=evs + [{"event_id": "e4"}])
    assert r.status_code == 400, r.json
    assert "event 1" in r.json["error"] and "no event was sent" in r.json["error"]
    assert r.json["rejected"] == [
        {"index": 1, "error": "event: could not be serialized as JSON"},
        {"index": 3, "error": "video_id: required"}]
    assert res._producer.sent == [] and res._producer.flushed == 0


def test_keys_and_rate_limit(tmp_path):
    key = "x" * 16
    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path), "serve": {
        "api_keys": [key], "rate_limit_per_s": 0.001, "rate_limit_burst": 2}})
    c = create_app(cfg).test_client()
    assert c.post("/v1/events", json={}).status_code == 401
    # Reads need no key unless serve.read_requires_key.
    r = c.get("/v1/top?k=0&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z")
    assert r.status_code == 400 and r.json["error"].startswith("k:")
    hdr = {"X-API-Key": key}
    codes = [c.post("/v1/events", json=[], headers=hdr).status_code for _ in range(3)]
    assert codes[:2] == [400, 400] and codes[2] == 429


def test_routing_errors_are_json_and_keep_their_headers(setup):
    _cfg, app, _res = setup
    c = app.test_client()
    r = c.delete("/v1/top")
    assert r.status_code == 405 and r.json["error"].startswith("DELETE /v1/top")
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD", "OPTIONS"}
    # A video id a werkzeug converter would not match (newline, slash, empty) is a 400 naming it.
    for vid in ("a%0Ab", "a/b", ""):
        r = c.get(f"/v1/videos/{vid}/counts?from=2025-11-24T00:00:00Z&to=2025-11-24T01:00:00Z")
        assert r.status_code == 400 and r.json["error"].startswith("video_id:"), (vid, r.json)
    from serving_layer import metrics

    text = metrics.render()[0].decode()
    assert 'endpoint="/v1/videos/{video_id}/counts"' in text


def test_indexed_view_and_lru():
    t = view_table([("b", "view", 2 * MIN, 1, 1), ("a", "view", MIN, 2, 2), ("a", "view", 0, 3, 3),
                    ("a", "like", 0, 4, 4), ("a-", "view", 0, 6, 6), ("A", "like", 0, 7, 7)])
    v = IndexedView(t)
    assert rows(v, "a", "view", 0, 10 * MIN) == [(0, 3, 3), (MIN, 2, 2)]
    assert rows(v, "a-", "view", 0, 10 * MIN) == [(0, 6, 6)] and rows(v, "a", "lik", 0, MIN) == []
    assert rows(v, "A", "like", 0, MIN) == [(0, 7, 7)] and rows(v, "A", "view", 0, MIN) == []
    assert rows(v, "a", "view", MIN, 10 * MIN) == [(MIN, 2, 2)]
    assert rows(v, "c", "view", 0, 10 * MIN) == []
    assert sorted(v.per_video_table("view", 0, 10 * MIN).to_pylist(), key=lambda r: r["video_id"]) == [
        {"video_id": "a", "count": 5, "watch_ms": 5}, {"video_id": "a-", "count": 6, "watch_ms": 6},
        {"video_id": "b", "count": 1, "watch_ms": 1}]
    assert v.per_video_table("like", 0, MIN).to_pylist() == [
        {"video_id": "A", "count": 7, "watch_ms": 7}, {"video_id": "a", "count": 4, "watch_ms": 4}]
    assert v.per_video_table("like", MIN, 10 * MIN).num_rows == 0
    assert IndexedView(t.slice(0, 0)).per_video_table("view", 0, 1).num_rows == 0
    assert rows(IndexedView(t.slice(0, 0)), "a", "view", 0, 1) == []

    class Item:
        def __init__(self, n):
            self.nbytes = n

    slot = ENTRY + key_bytes("a")  # what an entry weighs beside its value
    lru = ByteCache(100 + 3 * slot)
    lru.put("a", Item(60), 60)
    lru.put("b", Item(30), 30)
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("c", Item(30), 30)  # evicts b, the least recently used
    assert lru.get("b") is None and lru.get("a") and lru.get("c") and lru.bytes == 90 + 2 * slot
    assert lru.put("d", Item(500), 500)  # fits the budget alone: kept, everything else goes
    assert len(lru) == 1 and lru.get("d")


def rows(view, *args) -> list[tuple[int, int, int]]:
    return list(zip(*(a.tolist() for a in view.slice(*args))))


def _gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_metrics_freshness_gauges_and_backend_errors(setup):
    import time

    from schemas.event import parse_rfc3339_ms

    cfg, app, res = setup
    c = app.test_client()
    before = time.time()
    text = c.get("/metrics").get_data(as_text=True)
    after = time.time()
    horizon_age = _gauge(text, "tally_batch_horizon_age_seconds")
    assert before - (D0_MS + DAY) / 1000 <= horizon_age <= after - (D0_MS + DAY) / 1000
    updated = parse_rfc3339_ms("2025-11-26T10:00:02Z") / 1000
    assert before - updated <= _gauge(text, "tally_speed_lag_seconds") <= after - updated
    assert _gauge(text, "tally_speed_event_lag_seconds") is not None
    assert _gauge(text, "tally_speed_watermark_ahead_seconds") == 0.0  # a watermark in the past
    from schemas.event import format_ms

    res._speed.watermark = format_ms(int(time.time() * 1000) + 600_000)
    ahead = _gauge(c.get("/metrics").get_data(as_text=True), "tally_speed_watermark_ahead_seconds")
    assert 590 <= ahead <= 601
    res._speed.watermark = "2025-11-26T09:50:00Z"
    errors = _gauge(text, 'tally_backend_errors_total{dependency="hbase"}') or 0.0
    # HBase down: the scrape still answers with the horizon, the speed gauges are left out, and
    # a failed speed read counts as a backend error.
    res._speed.fail = True
    c.get("/v1/videos/v1/counts", query_string={"from": iso(D0_MS), "to": iso(D0_MS + 2 * DAY)})
    r = c.get("/metrics")
    assert r.status_code == 200
    text = r.get_data(as_text=True)
    assert _gauge(text, "tally_batch_horizon_age_seconds") is not None
    assert _gauge(text, "tally_speed_lag_seconds") is None
    assert _gauge(text, 'tally_backend_errors_total{dependency="hbase"}') >= errors + 1
