"""The REST API against the real stack and ground truth, number for number.

One installation (own topic, HBase tables, lake) holds three generated days D0..D2 with their
exact truth: D0 is published as a batch view (so the horizon H is D1 00:00), the truth's minutes
of D1 and D2 are written into the speed views, and the speed views of D0 hold WRONG counts on
purpose, so any bucket before H answered from the speed side shows up as a difference. Then many
random queries are compared with the truth, the horizon is moved by publishing D1, and the
failure modes are exercised (HBase unreachable, bad input, keys, sizes).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import random
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.servekit import (
    D0, D1, D2, DAY, assert_counts, build_world, consume, counts_params, day_ms, iso,
    random_query,
)
from tests.integration.speedkit import make_installation


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory, spark_reader):
    return build_world(stack, tmp_path_factory.mktemp("serving"), spark_reader)


def make_client(cfg, **serve):
    from serving_layer.app import create_app

    cfg = cfg.replace(serve={"catalog_ttl_s": 0.0, **serve})
    return create_app(cfg).test_client()


def check_counts(world, client, video, etype, gran, lo, hi, horizon_ms, from_raw=None, to_raw=None):
    r = client.get(f"/v1/videos/{video}/counts",
                   query_string=counts_params(etype, gran, lo, hi, from_raw, to_raw))
    assert r.status_code == 200, r.json
    return assert_counts(world, r.json, video, etype, gran, lo, hi, horizon_ms)


def random_queries(world, client, horizon_ms, n, seed):
    rnd = random.Random(seed)
    sources = collections.Counter()
    for i in range(n):
        video, etype, gran, lo, hi = random_query(world, rnd, horizon_ms)
        body = check_counts(world, client, video, etype, gran, lo, hi, horizon_ms,
                            from_raw=str(lo) if i % 3 == 0 else None)
        sources.update(b["source"] for b in body["buckets"])
    return sources


def test_counts_match_truth_across_the_horizon(world):
    client = make_client(world.inst.cfg, counts_shared_min_rate=0.0)
    h = day_ms(D1)
    sources = random_queries(world, client, h, 150, seed=1)
    assert sources["batch"] > 100 and sources["speed"] > 100, sources
    # The hours after 09:00 of D2 are open (the progress record's watermark is 09:50): above came
    # from the host's snapshots of the open hours (serve.counts_open_shared, at any rate); here
    # every request scans them.
    scanning = make_client(world.inst.cfg, counts_open_shared=False)
    sources = random_queries(world, scanning, h, 80, seed=2)
    assert sources["speed"] > 50, sources
    # Fixed edges: exactly one side, an empty video, one bucket at the horizon.
    top_video = world.videos[0]
    check_counts(world, client, top_video, "view", "hour", day_ms(D0), day_ms(D1), h)  # batch only
    check_counts(world, client, top_video, "view", "hour", day_ms(D1), day_ms(D2) + DAY, h)  # speed
    check_counts(world, client, "nobody", "like", "day", day_ms(D0) - DAY, day_ms(D2) + DAY, h)
    check_counts(world, client, top_video, "view", "minute", h - 60_000, h + 60_000, h)
    body = check_counts(world, client, top_video, "view", "day", day_ms(D0), day_ms(D2) + DAY, h)
    assert [b["source"] for b in body["buckets"]] == ["batch", "speed", "speed"]
    assert body["freshness"]["speed_max_event_time"] == "2026-11-27T10:00:00.000Z"
    assert body["freshness"]["speed_watermark"] == "2026-11-27T09:50:00.000Z"
    assert body["freshness"]["lag_seconds"] > 0
    assert body["pending_days"] == [] and body["pinned_days"] == []


def test_speed_buckets_beyond_retention_are_flagged(stack, tmp_path, unique):
    """With the horizon far back (the only published day 20 days ago), speed buckets older than
    the speed TTL are flagged, never silently zero."""
    from tests.integration.servekit import publish_minutes
    from tests.integration.speedkit import make_installation

    inst = make_installation(stack, tmp_path, unique)
    ttl = inst.cfg.hbase.speed_ttl_days
    far = make_client(inst.cfg)
    # The day is taken when the test runs (the suite may cross midnight) and the request retried
    # once when midnight passes while it runs.
    for _ in range(2):
        today = dt.datetime.now(dt.timezone.utc).date()
        start = today - dt.timedelta(days=20)
        publish_minutes(inst.cfg, start.isoformat(), [])
        r = far.get("/v1/videos/v1/counts", query_string={
            "granularity": "day", "from": start.isoformat() + "T00:00:00Z",
            "to": (today - dt.timedelta(days=3)).isoformat() + "T00:00:00Z"})
        if dt.datetime.now(dt.timezone.utc).date() == today:
            break
    assert r.status_code == 200, r.json
    assert r.json["batch_horizon"] == (start + dt.timedelta(days=1)).isoformat() + "T00:00:00.000Z"
    flags = [(b["source"], bool(b.get("beyond_retention"))) for b in r.json["buckets"]]
    # A day starting before now - TTL may have lost cells: today-19 .. today-TTL are flagged.
    assert flags == [("batch", False)] + [("speed", True)] * (20 - ttl) + [("speed", False)] * (ttl - 4)
    assert any("retention" in w for w in r.json["warnings"])


def test_top_matches_truth(world):
    client = make_client(world.inst.cfg)
    h = day_ms(D1)
    rnd = random.Random(5)
    exact_seen = {True: 0, False: 0}
    cases = [(day_ms(D0), day_ms(D1)), (day_ms(D0), day_ms(D2) + DAY), (h - 3_600_000, h + 3_600_000),
             (day_ms(D1) + 1234, day_ms(D2) + 5 * 3_600_000 + 17)]
    for _ in range(30):
        lo = rnd.randint(day_ms(D0) - DAY, day_ms(D2) + DAY)
        cases.append((lo, lo + rnd.randint(60_000, 3 * DAY)))
    for lo, hi in cases:
        etype = rnd.choice(["view", "like", "share"])
        k = rnd.choice([1, 5, 10, 50, 1000])
        r = client.get("/v1/top", query_string={"event_type": etype, "from": iso(lo), "to": iso(hi), "k": k})
        assert r.status_code == 200, r.json
        flo, chi = lo // 60_000 * 60_000, -(-hi // 60_000) * 60_000
        assert r.json["items"] == world.expected_top(etype, flo, chi, k), (etype, iso(lo), iso(hi), k)
        assert r.json["exact"] == (chi <= h)
        exact_seen[r.json["exact"]] += 1
    assert exact_seen[True] >= 1 and exact_seen[False] >= 10


def test_horizon_moves_between_queries(world, spark_reader):
    from batch_layer.job import run_dates

    client = make_client(world.inst.cfg)
    before = check_counts(world, client, world.videos[1], "view", "hour", day_ms(D0) + 5_000,
                          day_ms(D2) + 3_000, day_ms(D1))
    # `tally batch --date D1`, in process on the reader's session (one JVM start fewer).
    report = run_dates(spark_reader, world.inst.cfg, [D1], skip_unchanged=True, mode="batch")
    assert [r.published for r in report.results] == [True], report.lines()
    h = day_ms(D2)
    after = check_counts(world, client, world.videos[1], "view", "hour", day_ms(D0) + 5_000,
                         day_ms(D2) + 3_000, h)
    assert set(after["batch_versions"]) == {D0.isoformat(), D1.isoformat()}
    assert after["batch_versions"][D0.isoformat()] == before["batch_versions"][D0.isoformat()]
    sources = random_queries(world, client, h, 60, seed=2)
    assert sources["batch"] and sources["speed"]
    r = client.get("/v1/top", query_string={"from": iso(day_ms(D0)), "to": iso(day_ms(D2))})
    assert r.json["exact"] is True
    assert r.json["items"] == world.expected_top("view", day_ms(D0), day_ms(D2), 10)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hbase_down_answers_the_batch_part_with_a_flag(world):
    cfg = world.inst.cfg.replace(hbase={"port": _closed_port()})
    client = make_client(cfg)
    from batch_layer.catalog import Catalog

    published = Catalog(cfg).published_days()
    h = day_ms(D0)
    while dt.datetime.fromtimestamp(h / 1000, dt.timezone.utc).date().isoformat() in published:
        h += DAY
    video = world.videos[0]
    r = client.get(f"/v1/videos/{video}/counts", query_string={
        "from": iso(h - DAY), "to": iso(h + DAY), "granularity": "hour"})
    assert r.status_code == 200, r.json
    body = r.json
    assert body["speed_unavailable"] is True and body["partial"] is True
    want = world.expected_buckets(video, "view", h - DAY, h, 3_600_000)
    batch = [b for b in body["buckets"] if b["source"] == "batch"]
    speed = [b for b in body["buckets"] if b["source"] == "speed"]
    assert [(b["count"], b["watch_ms"]) for b in batch] == [tuple(want[k]) for k in sorted(want)]
    assert len(speed) == 24 and all(b["count"] is None and b["unavailable"] for b in speed)
    assert body["total"] == sum(c for c, _ in want.values())
    r = client.get(f"/v1/videos/{video}/counts", query_string={"from": iso(h), "to": iso(h + DAY)})
    assert r.status_code == 503 and r.headers["Retry-After"] and "hbase" in r.json["error"]
    r = client.get("/v1/top", query_string={"from": iso(h), "to": iso(h + 3_600_000)})
    assert r.status_code == 503 and r.json["dependency"] == "hbase"
    r = client.get("/v1/top", query_string={"from": iso(h - DAY), "to": iso(h + 3_600_000)})
    assert r.status_code == 200 and r.json["speed_unavailable"] and not r.json["exact"]
    r = client.get("/readyz")
    assert r.status_code == 503 and not r.json["dependencies"]["hbase"]["ready"]
    assert r.json["dependencies"]["kafka"]["ready"] and r.json["dependencies"]["lake"]["ready"]


def test_ingest_end_to_end_to_kafka(stack, tmp_path, unique):
    inst = make_installation(stack, tmp_path, unique)
    client = make_client(inst.cfg)
    now = int(time.time() * 1000)
    events = [{"event_id": f"e-{i}", "video_id": f"v{i % 7}", "event_type": "view",
               "ts": now - i * 1000, "watch_ms": i, "country": "NL", "schema_version": 2,
               "extra_v2_field": {"kept": True}} for i in range(300)]
    events.append(dict(events[0]))  # a client retry: accepted again, deduplicated downstream
    bad = [{"event_id": "x", "video_id": "bad id!", "event_type": "view", "ts": now},
           {"event_id": "y", "video_id": "v", "event_type": "view", "ts": now + 3 * 3_600_000},
           "not an object"]
    r = client.post("/v1/events", json=events[:150] + bad + events[150:])
    assert r.status_code == 202, r.json
    assert r.json["accepted"] == 301
    assert [x["index"] for x in r.json["rejected"]] == [150, 151, 152]
    assert r.json["rejected"][0]["error"].startswith("video_id:")
    assert r.json["rejected"][1]["error"].startswith("ts:")
    r = client.post("/v1/events", data=json.dumps(events[5]), content_type="application/json")
    assert r.status_code == 202 and r.json == {"accepted": 1, "rejected": []}
    records = consume(inst.cfg, 302)
    assert len(records) == 302
    got = collections.Counter(json.dumps(json.loads(rec.value), sort_keys=True) for rec in records)
    want = collections.Counter(json.dumps(e, sort_keys=True) for e in events + [events[5]])
    assert got == want
    assert all(rec.key == json.loads(rec.value)["video_id"].encode() for rec in records)


def test_ingest_is_all_or_nothing_on_kafka(stack, tmp_path, unique, monkeypatch):
    """On the real broker: a lone surrogate in one event of an array is that event's rejection
    (no 5xx), the others are sent; a serializer failure injected into one event of an array
    answers 400 and the topic's end offsets do not move (nothing sent before the failure)."""
    from serving_layer import ingest
    from tally.devstack.provision import end_offsets

    inst = make_installation(stack, tmp_path, unique)
    client = make_client(inst.cfg)
    now = int(time.time() * 1000)
    events = [{"event_id": f"a-{i}", "video_id": f"v{i}", "event_type": "view", "ts": now}
              for i in range(6)]
    body = json.dumps(events[:3])[:-1] + ', {"event_id": "s", "video_id": "v", ' \
        '"event_type": "view", "ts": %d, "note": "\\ud800"}, ' % now + json.dumps(events[3:])[1:]
    r = client.post("/v1/events", data=body, content_type="application/json")
    assert r.status_code == 202, r.json
    assert r.json == {"accepted": 6, "rejected": [{"index": 3, "error": "event: not valid JSON"}]}
    assert len(consume(inst.cfg, 6)) == 6
    before = end_offsets(inst.cfg)
    real = ingest.to_json

    def failing(event):
        if event["event_id"] == "a-4":
            raise TypeError("injected")
        return real(event)

    monkeypatch.setattr(ingest, "to_json", failing)
    r = client.post("/v1/events", json=events)
    assert r.status_code == 400 and "event 4" in r.json["error"], r.json
    assert end_offsets(inst.cfg) == before


def test_bad_requests_keys_and_sizes(world):
    key = "k" * 24
    client = make_client(world.inst.cfg, api_keys=[key], read_requires_key=True)
    ev = {"event_id": "a", "video_id": "v", "event_type": "view", "ts": int(time.time() * 1000)}
    assert client.post("/v1/events", json=ev).status_code == 401
    assert client.post("/v1/events", json=ev, headers={"X-API-Key": "wrong" * 5}).status_code == 401
    assert client.get("/v1/top?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z").status_code == 401
    ok = {"X-API-Key": key}
    assert client.get("/healthz").status_code == 200  # ops endpoints need no key
    cases = [
        ("/v1/videos/v/counts?from=nope&to=2026-01-02T00:00:00Z", "from:"),
        ("/v1/videos/v/counts?from=2026-01-01T00:00:00Z", "to:"),
        ("/v1/videos/v/counts?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to:"),
        ("/v1/videos/v/counts?from=2026-01-01T00:00:00Z&to=2026-01-09T00:00:01Z&granularity=minute", "to:"),
        ("/v1/videos/v/counts?from=2025-01-01T00:00:00Z&to=2026-03-01T00:00:00Z&granularity=day", "to:"),
        ("/v1/videos/v/counts?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&granularity=week", "granularity:"),
        ("/v1/videos/v/counts?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&event_type=poke", "event_type:"),
        ("/v1/videos/bad%20id/counts?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", "video_id:"),
        ("/v1/videos/" + "x" * 65 + "/counts?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", "video_id:"),
        ("/v1/videos/v/counts?from=1999-12-31T00:00:00Z&to=2026-01-02T00:00:00Z", "from:"),
        ("/v1/videos/v/counts?from=2026-02-30T00:00:00Z&to=2026-03-02T00:00:00Z", "from:"),
        ("/v1/top?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&k=1001", "k:"),
        ("/v1/top?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&k=0", "k:"),
        ("/v1/top?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&k=ten", "k:"),
    ]
    for url, param in cases:
        r = client.get(url, headers=ok)
        assert r.status_code == 400 and r.json["error"].startswith(param), (url, r.status_code, r.json)
    # A 7-day minute range and a 400-day hour range are served.
    assert client.get("/v1/videos/v/counts?from=2026-01-01T00:00:00Z&to=2026-01-08T00:00:00Z"
                      "&granularity=minute", headers=ok).status_code == 200
    assert client.get("/v1/videos/v/counts?from=2025-01-01T00:00:00Z&to=2026-02-05T00:00:00Z"
                      "&granularity=hour", headers=ok).status_code == 200
    # Ingest limits.
    assert client.post("/v1/events", data=b"{not json", headers=ok, content_type="application/json").status_code == 400
    assert client.post("/v1/events", data=b"\xff\xfe", headers=ok, content_type="application/json").status_code == 400
    assert client.post("/v1/events", json=[], headers=ok).status_code == 400
    r = client.post("/v1/events", json=[{"event_id": "a"}], headers=ok)
    assert r.status_code == 400 and r.json["rejected"][0]["error"] == "video_id: required"
    r = client.post("/v1/events", json=[ev] * 1001, headers=ok)
    assert r.status_code == 413 and "1000" in r.json["error"]
    r = client.post("/v1/events", data=b"[" + b" " * (1024 * 1024) + b"]", headers=ok, content_type="application/json")
    assert r.status_code == 413 and r.json["error"].startswith("body:")
    assert client.get("/nope").status_code == 404 and client.get("/nope").json["error"]
    assert client.delete("/v1/events", headers=ok).status_code == 405
    # Per-key rate limit: the burst, then 429 with Retry-After; other keys unaffected.
    limited = make_client(world.inst.cfg, api_keys=[key, "z" * 24], rate_limit_per_s=0.01,
                          rate_limit_burst=2)
    url = "/v1/top?from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z"
    assert [limited.get(url, headers=ok).status_code for _ in range(3)] == [200, 200, 429]
    r = limited.get(url, headers=ok)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json["error"].startswith("rate limit")
    assert limited.get(url, headers={"X-API-Key": "z" * 24}).status_code == 200
    doc = client.get("/openapi.json").json
    assert set(doc["paths"]) >= {"/v1/events", "/v1/videos/{video_id}/counts", "/v1/top",
                                 "/healthz", "/readyz", "/metrics"}


def _free_port() -> int:
    return _closed_port()


def test_tally_serve_under_gunicorn_and_tally_query(world):
    from serving_layer.client import TallyClient

    port = _free_port()
    env = {**world.inst.env, "TALLY_SERVE__WORKERS": "2", "TALLY_SERVE__CATALOG_TTL_S": "0"}
    log = open(world.inst.root / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tally.cli", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = TallyClient(f"http://127.0.0.1:{port}", max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.request("GET", "/healthz")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((world.inst.root / "serve.log").read_text())
                time.sleep(0.3)
        client = TallyClient(f"http://127.0.0.1:{port}")
        from batch_layer.catalog import Catalog

        published = Catalog(world.inst.cfg).published_days()
        h = day_ms(D0)
        while dt.datetime.fromtimestamp(h / 1000, dt.timezone.utc).date().isoformat() in published:
            h += DAY
        pids = set()
        video = world.videos[0]
        for i in range(12):
            body = client.counts(video, iso(h - DAY + i * 1000), iso(h + DAY - 5), granularity="hour")
            want = world.expected_buckets(video, "view", h - DAY, h + DAY, 3_600_000)
            assert [(b["count"], b["watch_ms"]) for b in body["buckets"]] == \
                [tuple(want[k]) for k in sorted(want)]
            pids.add(client.request("GET", "/healthz")["pid"])
        assert client.request("GET", "/readyz")["ready"] is True
        metrics = client.session.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'tally_http_requests_total{endpoint="/v1/videos/{video_id}/counts"' in metrics
        res = subprocess.run([sys.executable, "-m", "tally.cli", "query", video, "--from", iso(h - DAY),
                              "--to", iso(h + DAY), "--granularity", "day", "--url",
                              f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        want = world.expected_buckets(video, "view", h - DAY, h + DAY, DAY)
        lines = [ln.split() for ln in res.stdout.splitlines() if ln.startswith(iso(h - DAY)[:4])]
        assert [(int(ln[1]), int(ln[2]), ln[3]) for ln in lines] == \
            [(want[h - DAY][0], want[h - DAY][1], "batch"), (want[h][0], want[h][1], "speed")]
        # `tally top`: the API's list as JSON, and the same as a table.
        top = ["top", "--from", iso(h - DAY), "--to", iso(h + DAY), "--k", "5", "--url",
               f"http://127.0.0.1:{port}"]
        want_top = world.expected_top("view", h - DAY, h + DAY, 5)
        res = subprocess.run([sys.executable, "-m", "tally.cli", *top, "--json"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["items"] == want_top
        res = subprocess.run([sys.executable, "-m", "tally.cli", *top], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        rows = [ln.split() for ln in res.stdout.splitlines()[3:] if not ln.startswith("warning")]
        assert [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in rows] == \
            [(i, t["video_id"], t["count"], t["watch_ms"]) for i, t in enumerate(want_top, 1)]
        res = subprocess.run([sys.executable, "-m", "tally.cli", "query", video, "--from", "x",
                              "--to", iso(h), "--url", f"http://127.0.0.1:{port}"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "from:" in res.stderr and res.stderr.count("\n") == 1
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
