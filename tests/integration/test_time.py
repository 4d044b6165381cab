"""Exactness under real-world time, on ONE installation that starts empty, with the real stream
(`tally stream`), the real archive and its index, the batch layer and the API (in process),
checked against ground truth computed here from what was sent:

1. an API started before any data sees a publication within ``serve.catalog_ttl_s`` + 1 s;
2. an event dated 2000-01-01 and a week of buffered events make days pending, never move the
   horizon; the nightly run computes exactly those days; then merged = truth, nothing pending;
3. clients 30-59 minutes fast: left out of the speed views and counted per day, every on-time
   event still counted; a forced version of the open day does not move the horizon;
4. late events 10 and 40 days old: counted by the nightly run, kept readable through the index
   and the compaction manifests once the sink's log has dropped them; a shrunk input refused;
5. a rollback pins its day: the nightly run leaves it, answers list it.

The steps build on each other in file order (one world, like the users' own installation).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import os
import time
import uuid

import pytest

from schemas.event import format_ms, parse_rfc3339_ms
from tests.integration.speedkit import make_installation, wait_exit

DAY = 86_400_000
MIN = 60_000


def day_ms(d: str) -> int:
    return (dt.date.fromisoformat(d) - dt.date(1970, 1, 1)).days * DAY


def day_of(ms: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=ms // DAY)).isoformat()


def at(day_or_time: str) -> str:
    """A day as the instant it starts; an instant as it is."""
    return day_or_time if "T" in day_or_time else day_or_time + "T00:00:00Z"


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def days_ago(n: int) -> str:
    return (dt.date.fromisoformat(today()) - dt.timedelta(days=n)).isoformat()


@dataclasses.dataclass
class TimeWorld:
    inst: object
    client: object  # serve.catalog_ttl_s as configured (step 1 checks publications within it)
    stream: object
    fresh: object = None  # catalog_ttl_s 0: sees every publication at once (no wait for the TTL)
    truth: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # (v, t, day)
    seq: int = 0

    def events(self, n: int, video: str, ts, etype: str = "view") -> list[dict]:
        """``n`` fresh events (distinct ids) of ``video`` at ``ts(i)``, added to the truth."""
        out = []
        for i in range(n):
            self.seq += 1
            e = {"event_id": f"tw-{self.seq}", "video_id": video, "event_type": etype,
                 "ts": int(ts(i)), "watch_ms": 10}
            out.append(e)
            self.truth[(video, etype, day_of(e["ts"]))] += 1
        return out

    def send_kafka(self, events: list[dict]) -> None:
        from adapters.producer import TallyProducer

        with TallyProducer(self.inst.cfg) as producer:
            for e in events:
                producer.send_event(e)

    def post(self, events: list[dict]) -> dict:
        r = self.client.post("/v1/events", json=events)
        assert r.status_code == 202, r.json
        assert r.json["accepted"] == len(events), r.json
        return r.json

    def counts(self, video: str, lo: str, hi: str, gran: str = "day", etype: str = "view",
               client=None) -> dict:
        r = (client or self.client).get(f"/v1/videos/{video}/counts", query_string={
            "event_type": etype, "granularity": gran, "from": at(lo), "to": at(hi)})
        assert r.status_code == 200, r.json
        return r.json

    def state(self):
        from adapters.lake import lake_store
        from speed_layer.archive_index import ArchiveIndex

        return ArchiveIndex(lake_store(self.inst.cfg)).state()

    def until(self, what: str, cond, timeout_s: float = 180) -> None:
        """Poll ``cond`` until it holds; fail naming ``what``, with the stream's log."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout_s:.0f}s:\n{self.inst.stream_log()}")
            time.sleep(0.5)

    def wait_archived(self) -> None:
        """Until the archive's index holds everything the topic holds now."""
        from batch_layer.job import archive_lag, topic_end_offsets

        ends = topic_end_offsets(self.inst.cfg)
        self.until(f"the archive caught up with {ends}",
                   lambda: archive_lag(ends, self.state(), self.inst.cfg.kafka.topic) == 0)

    def wait_watermark(self, at_least_ms: int) -> None:
        """Until the speed query runs with a watermark of at least ``at_least_ms`` (it reads
        the topic on its own, and may be behind the archive)."""
        from speed_layer.store import HBaseSpeedStore

        store = HBaseSpeedStore(self.inst.cfg)

        def reached() -> bool:
            mark = (store.read_progress() or {}).get("watermark")
            return bool(mark) and parse_rfc3339_ms(mark) >= at_least_ms
        self.until(f"the speed watermark reached {format_ms(at_least_ms)}", reached)

    def assert_truth(self, videos, lo: str, hi: str, client=None) -> None:
        """Merged counts by day = the truth, for ``videos`` over [lo, hi)."""
        for v in videos:
            body = self.counts(v, lo, hi, client=client)
            got = {b["start"][:10]: b["count"] for b in body["buckets"]}
            want = {d: self.truth.get((v, "view", d), 0) for d in got}
            assert got == want, (v, {d: (got[d], want[d]) for d in got if got[d] != want[d]}, body["warnings"] if "warnings" in body else None)


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory):
    from serving_layer.app import create_app

    root = tmp_path_factory.mktemp("time")
    u = uuid.uuid4().hex[:10]
    inst = make_installation(
        stack, root, u,
        # Yesterday is closed at midnight (the suite may run at 00:05 UTC); the sink's own log
        # forgets files after 8 s and compacts every 3 batches, so that old entries drop out
        # (the stream's listener indexes each batch's files right after the batch).
        TALLY_BATCH__LATENESS="0 minutes", TALLY_BATCH__CLOSE_TIMEOUT_S="120",
        TALLY_ARCHIVE__SINK_RETENTION="8 seconds", TALLY_ARCHIVE__SINK_LOG_COMPACT_BATCHES="3")
    from tally.devstack.provision import create_lake

    create_lake(inst.cfg)  # what `tally stack up` does for a new installation
    client = create_app(inst.cfg).test_client()
    # The API is up before any data (what a new user does first).
    first = client.get("/v1/videos/tw-a/counts", query_string={
        "from": days_ago(3) + "T00:00:00Z", "to": today() + "T00:00:00Z", "granularity": "day"})
    assert first.status_code == 200 and first.json["batch_horizon"] is None, first.json
    stream = inst.start_stream("--trigger", "1s", "--archive-trigger", "2s")
    inst.wait_for_log("queries speed", 240)
    w = TimeWorld(inst, client, stream,
                  create_app(inst.cfg.replace(serve={"catalog_ttl_s": 0.0})).test_client())
    yield w
    stream.send_signal(2)
    wait_exit(stream, 120, inst)
    _drop(stack, u)


def _drop(cfg, u):
    from tests.conftest import _drop_owned

    try:
        _drop_owned(cfg, u)
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def test_publication_is_visible_within_the_catalog_ttl(world, spark_reader):
    from batch_layer.job import run_nightly

    w = world
    # Late in each day, so that the buffered events of the next test (at 02:00) are behind the
    # watermark.
    for n, v in ((3, "tw-a"), (2, "tw-b"), (1, "tw-c")):
        w.send_kafka(w.events(40, v, lambda i, n=n: day_ms(days_ago(n)) + 20 * 3_600_000 + i * MIN))
    w.wait_archived()
    assert w.counts("tw-a", days_ago(3), today())["batch_horizon"] is None
    report = run_nightly(spark_reader, w.inst.cfg)
    published_at = time.monotonic()
    assert sorted(r.day for r in report.results if r.published) == [days_ago(3), days_ago(2), days_ago(1)]
    ttl = w.inst.cfg.serve.catalog_ttl_s
    want = format_ms(day_ms(today()))
    while True:
        body = w.counts("tw-a", days_ago(3), today())
        if body["batch_horizon"] == want and len(body["batch_versions"]) == 3:
            break
        assert time.monotonic() - published_at <= ttl + 1, body["batch_horizon"]
        time.sleep(0.1)
    print(f"horizon visible {time.monotonic() - published_at:.2f}s after the publication")
    assert [b["source"] for b in body["buckets"]] == ["batch"] * 3
    w.assert_truth(["tw-a", "tw-b", "tw-c"], days_ago(5), today())
    top = w.client.get("/v1/top", query_string={"from": at(days_ago(3)), "to": at(today()),
                                                  "k": 3}).json
    assert top["exact"] and top["pending_days"] == [] and len(top["items"]) == 3


def test_old_and_buffered_events_make_days_pending_and_never_move_the_horizon(world, spark_reader):
    from batch_layer.job import run_nightly
    from speed_layer.store import HBaseSpeedStore

    w = world
    horizon = format_ms(day_ms(today()))
    before = {d: w.truth[("tw-b", "view", d)] for d in (days_ago(2),)}
    # One valid event dated 2000-01-01 over HTTP, and a mobile client's week of buffered events
    # straight to Kafka (days 7..1 ago, some published, some never seen).
    # The watermark the previous step's events set (yesterday 20:39 - stream.watermark): every
    # buffered event below is behind it.
    w.wait_watermark(day_ms(days_ago(1)) + 20 * 3_600_000 + 39 * MIN - w.inst.cfg.stream.watermark_ms)
    w.post(w.events(1, "tw-old", lambda i: parse_rfc3339_ms("2000-01-01T00:00:00Z")))
    week = [days_ago(n) for n in range(7, 0, -1)]
    buffered = [e for d in week for e in w.events(5, "tw-b", lambda i, d=d: day_ms(d) + 7_200_000 + i)]
    w.send_kafka(buffered)
    w.wait_archived()
    deadline = time.monotonic() + w.inst.cfg.serve.catalog_ttl_s + 5
    while True:
        body = w.counts("tw-b", days_ago(8), today())
        if body["pending_days"] == week or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert body["pending_days"] == week, body
    assert body["batch_horizon"] == horizon  # neither the old event nor the buffered week moved it
    src = {b["start"][:10]: (b["source"], b["count"]) for b in body["buckets"]}
    # Published days still answer from their (older) version; the others from the speed views
    # (which dropped the buffered events as late) or, beyond their retention, none.
    assert src[days_ago(2)] == ("batch", before[days_ago(2)])
    assert src[days_ago(8)][0] == "batch" and src[days_ago(5)] == ("speed", 0)
    assert src[days_ago(7)][0] in ("speed", "none")
    old = w.counts("tw-old", "2000-01-01T00:00:00Z", "2000-01-03T00:00:00Z")
    assert old["pending_days"] == ["2000-01-01"] and old["batch_horizon"] == horizon
    assert w.counts("tw-b", today(), days_ago(-1))["pending_days"] == []  # only over their range
    top = w.client.get("/v1/top", query_string={"from": at(days_ago(3)), "to": at(days_ago(1))}).json
    assert not top["exact"] and top["pending_days"] == [days_ago(3), days_ago(2)]
    # The speed layer dropped the buffered week as late and counted it per day of event time.
    counters = HBaseSpeedStore(w.inst.cfg)
    deadline = time.monotonic() + 60  # the speed query may come after the archive's
    while time.monotonic() < deadline:
        got = {d: counters.read_day_counters(d)["dropped_late"] for d in week}
        if all(v == 5 for v in got.values()):
            break
        time.sleep(0.5)
    assert got == {d: 5 for d in week}, (got, counters.read_progress())

    report = run_nightly(spark_reader, w.inst.cfg)
    computed = sorted(r.day for r in report.results)
    assert computed == sorted(["2000-01-01", *week]), report.lines()
    assert all(r.published for r in report.results), report.lines()
    body = w.counts("tw-b", days_ago(9), today())
    for _ in range(50):
        if body["pending_days"] == []:
            break
        time.sleep(0.1)
        body = w.counts("tw-b", days_ago(9), today())
    assert body["pending_days"] == [] and body["batch_horizon"] == horizon
    w.assert_truth(["tw-a", "tw-b", "tw-c"], days_ago(9), days_ago(-1))
    w.assert_truth(["tw-old"], "2000-01-01", "2000-01-03")
    audit = w.inst.tally("audit", "--date", days_ago(5), "--json", check=False)
    report5 = json.loads(audit.stdout)
    assert audit.returncode == 0 and report5["explained"], report5
    assert report5["dropped_late_counter"] == 5 and report5["events"]["missed"] == 5


def test_clients_with_fast_clocks_cannot_blind_the_speed_layer(world, spark_reader):
    from batch_layer.job import run_dates
    from speed_layer.store import HBaseSpeedStore

    w = world
    store = HBaseSpeedStore(w.inst.cfg)
    ahead_before = int((store.read_progress() or {}).get("ahead_of_clock") or 0)
    now = int(time.time() * 1000)
    skewed = w.events(60, "tw-fast", lambda i: now + (30 + i % 30) * MIN)
    w.post(skewed[:30])
    ontime = w.events(40, "tw-on", lambda i: now - 5_000 + i * 10)
    w.post(ontime[:20])
    w.post(skewed[30:])
    time.sleep(2)
    w.post(ontime[20:])  # sent after every skewed event: the old watermark dropped these
    want = collections.Counter((day_of(e["ts"]), e["ts"] // MIN * MIN) for e in ontime)
    deadline = time.monotonic() + 120
    while True:
        got = collections.Counter()
        for m in store.read_minutes("tw-on", "view", now - 10 * MIN, now + 10 * MIN):
            got[(day_of(m.minute_ms), m.minute_ms)] = m.count
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == want  # every on-time event counted, exactly
    assert store.read_minutes("tw-fast", "view", now, now + 2 * 3_600_000) == []
    progress = store.read_progress()
    assert progress["ahead_of_clock"] - ahead_before == 60
    assert parse_rfc3339_ms(progress["watermark"]) <= int(time.time() * 1000)
    per_day = collections.Counter(day_of(e["ts"]) for e in skewed)
    for d, n in per_day.items():
        assert store.read_day_counters(d)["ahead_of_clock"] == n, (d, n)
    metrics = w.client.get("/metrics").data.decode()
    assert "tally_speed_watermark_ahead_seconds 0.0" in metrics

    # The open day: refused without --force; with it, exact, and the horizon stays.
    w.wait_archived()
    res = w.inst.tally("batch", "--date", today(), check=False)
    assert res.returncode == 1 and "not closed" in res.stdout, (res.stdout, res.stderr)
    days = sorted({today(), *per_day})
    report = run_dates(spark_reader, w.inst.cfg, [dt.date.fromisoformat(d) for d in days], force=True)
    assert all(r.published and not r.closed for r in report.results), report.lines()
    from batch_layer.views import BatchViews

    bv = BatchViews(w.inst.cfg)
    for d in days:
        table = bv.read_day(d, "day")
        got_day = {(r["video_id"]): r["count"] for r in table.to_pylist()
                   if r["video_id"] in ("tw-fast", "tw-on")}
        want_day = {v: w.truth[(v, "view", d)] for v in ("tw-fast", "tw-on") if w.truth[(v, "view", d)]}
        assert got_day == want_day, (d, got_day, want_day)
        audit = json.loads(w.inst.tally("audit", "--date", d, "--json", check=False).stdout)
        assert audit["explained"] and audit["ahead_of_clock_counter"] == per_day.get(d, 0), audit
    # (The API without a catalog TTL: the forced versions are visible at once.)
    assert w.counts("tw-on", days_ago(2), days_ago(-2), client=w.fresh)["batch_horizon"] == \
        format_ms(day_ms(today()))


def test_late_data_of_any_age_is_counted_and_stays_readable(world, spark_reader):
    from adapters.lake import lake_store
    from batch_layer.job import run_dates, run_nightly
    from speed_layer import archive_index

    w = world
    d10, d40 = days_ago(10), days_ago(40)
    early = []
    for r in range(4):  # separate archive batches: the sink's log compacts every 3
        batch = w.events(3, "tw-late", lambda i, r=r: day_ms(d10) + r * MIN + i) + \
            w.events(2, "tw-late", lambda i, r=r: day_ms(d40) + r * MIN + i)
        early += batch
        w.send_kafka(batch)
        w.wait_archived()
    store = lake_store(w.inst.cfg)
    index = archive_index.ArchiveIndex(store)
    early_files = {f.path for d in (d10, d40) for f in index.day(d).files}
    report = run_nightly(spark_reader, w.inst.cfg)
    assert {d10, d40} <= {r.day for r in report.results if r.published}, report.lines()
    assert {d10, d40} <= set(report.compacted)
    w.assert_truth(["tw-late"], days_ago(45), days_ago(1))
    # Later batches, once the early files are older than the sink log's retention: its
    # compaction drops them from the log, the index and the manifests keep them.
    time.sleep(w.inst.cfg.archive.sink_retention_ms / 1000 + 1)
    for r in range(4):
        w.send_kafka(w.events(1, "tw-late", lambda i, r=r: day_ms(d10) + 3_600_000 + r))
        w.wait_archived()
    listed = {e["path"] for e in archive_index.committed_entries(store, "raw/events")}
    assert early_files and not (early_files & listed), "the sink log still lists the early files"
    report = run_nightly(spark_reader, w.inst.cfg)
    assert [r.day for r in report.results] == [d10], report.lines()
    w.assert_truth(["tw-late"], days_ago(45), days_ago(1))

    # A file of the day rewritten with fewer rows: the index holds more, so it is refused.
    import pyarrow.parquet as pq

    day40 = index.day(d40)
    path = day40.input_files()[0].path.replace("file://", "")
    original = open(path, "rb").read()
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    crc = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.crc")
    saved = open(crc, "rb").read() if os.path.exists(crc) else None
    if saved is not None:
        os.unlink(crc)
    try:
        refused = run_dates(spark_reader, w.inst.cfg, [dt.date.fromisoformat(d40)]).results[0]
        assert not refused.published and refused.refused and "index holds" in refused.reason
    finally:
        open(path, "wb").write(original)
        if saved is not None:
            open(crc, "wb").write(saved)
    w.assert_truth(["tw-late"], days_ago(45), days_ago(1))


def test_a_rollback_pins_its_day(world, spark_reader):
    from batch_layer.catalog import Catalog
    from batch_layer.job import run_dates, run_nightly

    w = world
    d, d1 = days_ago(2), days_ago(1)
    v1 = Catalog(w.inst.cfg).current(d)["version"]
    added = w.events(4, "tw-pin", lambda i: day_ms(d) + 40 * MIN + i)
    # And one event whose retry (re-stamped after midnight) reached Kafka before the original:
    # by the contract's rule the copy on the earlier day counts.
    x = {"event_id": "tw-midnight", "video_id": "tw-pin", "event_type": "view", "watch_ms": 1}
    w.send_kafka([{**x, "ts": day_ms(d1) + 400}, {**x, "ts": day_ms(d1) - 100}] + added)
    w.truth[("tw-pin", "view", d)] += 1
    w.wait_archived()
    r = run_dates(spark_reader, w.inst.cfg, [dt.date.fromisoformat(d)]).results[0]
    assert r.published and r.version != v1
    res = w.inst.tally("rollback", "--date", d)
    assert "published again" in res.stdout
    entry = Catalog(w.inst.cfg).current(d)
    assert entry["version"] == v1 and entry["pinned"]
    report = run_nightly(spark_reader, w.inst.cfg)
    assert d in report.pinned and d not in {x.day for x in report.results}, report.lines()
    # The next day left the pinned day out of its deduplication: the event counts once, there.
    assert d1 in {x.day for x in report.results}, report.lines()
    assert Catalog(w.inst.cfg).current(d)["version"] == v1
    # From here the API without a catalog TTL: each publication is visible at once.
    body = w.counts("tw-pin", days_ago(3), today(), client=w.fresh)
    assert body["pinned_days"] == [d] and body["pending_days"] == []
    got = {b["start"][:10]: b["count"] for b in body["buckets"]}
    assert (got[d], got[d1]) == (0, 1)  # v1 predates them; the retry's copy on the next day
    # --force publishes it again (and unpins it); the next day is pending until the nightly run.
    # `tally batch --date D --force`, in process on the reader's session (one JVM start fewer).
    report = run_dates(spark_reader, w.inst.cfg, [dt.date.fromisoformat(d)], force=True,
                       skip_unchanged=True, mode="batch")
    assert report.to_json()["days"][0]["published"], report.lines()
    body = w.counts("tw-pin", days_ago(3), today(), client=w.fresh)
    assert body["pinned_days"] == [] and body["pending_days"] == [d1]
    assert [x.day for x in run_nightly(spark_reader, w.inst.cfg).results] == [d1]
    body = w.counts("tw-pin", days_ago(3), today(), client=w.fresh)
    assert body["pending_days"] == []
    w.assert_truth(["tw-a", "tw-b", "tw-c", "tw-pin", "tw-late"], days_ago(45), days_ago(1),
                   client=w.fresh)
