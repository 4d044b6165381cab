"""The serving layer on an S3 lake (the local S3 endpoint) and with the lake unreadable.

One installation with its lake on S3 (own prefix in the stack's bucket, own HBase tables and
topic): three generated days, the first two published as batch views, all three in the speed
views (wrong before the horizon). Counts and top-K read from S3 equal the truth. With the lake
unreadable — the S3 endpoint wrong, a file:// lake whose root is gone, a published view whose
files are missing — every answer that needs the batch views is a 503 with Retry-After naming
the lake (never a 500), ``/readyz`` names it, and liveness stays up.
"""

from __future__ import annotations

import datetime as dt
import random
import socket
import uuid

import pytest

from schemas.event import format_ms
from tests.integration.servekit import DAY, GRAN, build_published_world, day_ms, publish_minutes
from tests.integration.speedkit import make_installation

FIRST = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=3)


@pytest.fixture(scope="module")
def s3_world(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-s3")
    inst = make_installation(stack, root, uuid.uuid4().hex[:10], lake="s3",
                             TALLY_BATCH__HORIZON_START=FIRST.isoformat())
    assert inst.cfg.lake_uri.startswith("s3a://")
    return build_published_world(inst, FIRST, days=3, batch_days=2, events=3000, videos=15,
                                 seed=3)


def client_of(cfg):
    from serving_layer.app import create_app

    return create_app(cfg.replace(serve={"catalog_ttl_s": 0.0})).test_client()


def test_counts_and_top_from_an_s3_lake(s3_world):
    w = s3_world
    client = client_of(w.inst.cfg)
    rnd = random.Random(4)
    sources = set()
    for _ in range(25):
        video = rnd.choice(w.videos[:8])
        gran = rnd.choice(["minute", "hour", "day"])
        lo = w.horizon_ms - rnd.randint(1, 2 * DAY if gran != "minute" else DAY)
        hi = w.horizon_ms + rnd.randint(1, DAY)
        size = GRAN[gran]
        r = client.get(f"/v1/videos/{video}/counts", query_string={
            "from": str(lo), "to": str(hi), "granularity": gran})
        assert r.status_code == 200, r.json
        flo, chi = lo // size * size, -(-hi // size) * size
        want = w.expected_buckets(video, "view", flo, chi, size)
        got = [(b["count"], b["watch_ms"], b["source"]) for b in r.json["buckets"]]
        assert got == [(*want[b], "batch" if b < w.horizon_ms else "speed") for b in sorted(want)]
        assert r.json["batch_horizon"] == format_ms(w.horizon_ms)
        sources.update(s for _c, _w, s in got)
    assert sources == {"batch", "speed"}
    reader = client.application.extensions["tally"]["resources"].batch
    assert type(reader.views.fs).__name__ == "S3FileSystem" and len(reader.view_cache) >= 3
    lo, hi = day_ms(FIRST), w.horizon_ms + 6 * 3_600_000
    r = client.get("/v1/top", query_string={"from": format_ms(lo), "to": format_ms(hi), "k": 5})
    assert r.status_code == 200 and r.json["items"] == w.expected_top("view", lo, hi, 5)
    assert client.get("/readyz").json["dependencies"]["lake"]["ready"] is True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_lake_503(client, w):
    lo, hi = w.horizon_ms - DAY, w.horizon_ms + DAY
    for path, extra in ((f"/v1/videos/{w.videos[0]}/counts", {}), ("/v1/top", {"k": 3})):
        r = client.get(path, query_string={"from": format_ms(lo), "to": format_ms(hi), **extra})
        assert r.status_code == 503, (path, r.status_code, r.json)
        assert r.json["dependency"] == "lake" and r.json["error"].startswith("lake: ")
        assert int(r.headers["Retry-After"]) > 0


def test_lake_unreadable_is_a_503_naming_it(s3_world, tmp_path):
    w = s3_world
    # The S3 endpoint is wrong (nothing listens there).
    wrong = client_of(w.inst.cfg.replace(lake={"s3_endpoint": f"http://127.0.0.1:{_closed_port()}"}))
    assert_lake_503(wrong, w)
    r = wrong.get("/readyz")
    assert r.status_code == 503 and r.headers["Retry-After"] and "lake" in r.json["error"]
    deps = r.json["dependencies"]
    assert not deps["lake"]["ready"] and deps["hbase"]["ready"] and deps["kafka"]["ready"]
    assert wrong.get("/healthz").status_code == 200

    # A file:// lake whose root is gone (an unmounted volume): not "nothing published".
    gone = client_of(w.inst.cfg.replace(lake={"uri": (tmp_path / "not-mounted").as_uri()}))
    assert_lake_503(gone, w)
    assert gone.get("/readyz").json["dependencies"]["lake"]["ready"] is False

    # The log names a version whose files are missing (removed underneath the reader).
    from adapters.lake import lake_store
    from batch_layer.catalog import version_key

    broken_cfg = w.inst.cfg.replace(lake={"uri": f"{w.inst.cfg.lake_uri}-broken"})
    store = lake_store(broken_cfg)
    day = FIRST.isoformat()
    version = publish_minutes(broken_cfg, day, [("v1", "view", day_ms(FIRST), 1, 1)], store=store)
    assert store.delete_prefix(f"{version_key(day, version)}/") == 3
    broken = client_of(broken_cfg)
    r = broken.get("/v1/videos/v1/counts", query_string={
        "from": format_ms(day_ms(FIRST)), "to": format_ms(day_ms(FIRST) + DAY)})
    assert r.status_code == 503 and r.json["dependency"] == "lake", r.json
    assert f"reading the hour view of {day}" in r.json["error"]
    # Its speed part alone is still answered.
    r = broken.get("/v1/videos/v1/counts", query_string={
        "from": format_ms(day_ms(FIRST) + DAY), "to": format_ms(day_ms(FIRST) + 2 * DAY)})
    assert r.status_code == 200 and {b["source"] for b in r.json["buckets"]} == {"speed"}
