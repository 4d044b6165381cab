"""Requests a web page, an attacker or a careless operator can make: bodies not declared JSON,
foreign Host headers, invented API keys, many keys, custom methods, non-loopback binds."""

from __future__ import annotations

import multiprocessing

import pytest

from schemas.config import load_config
from schemas.errors import ConfigError
from serving_layer.app import create_app

KEY = "k" * 16
TOP = "/v1/top?k=0&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z"  # a 400 once it is reached


def make(tmp_path, **serve):
    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path), "serve": serve})
    return cfg, create_app(cfg).test_client()


def test_a_post_not_declared_json_is_415(tmp_path):
    _cfg, c = make(tmp_path)
    ev = b'{"event_id":"e1","video_id":"v1","event_type":"view","ts":"2025-11-25T00:00:00Z"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                  "application/json; charset=latin-1", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = c.post("/v1/events", data=ev, headers=headers)
        assert r.status_code == 415, (ctype, r.status_code)
        assert r.json["error"].startswith("Content-Type: must be application/json")


def test_a_foreign_host_is_400_and_the_probes_answer_any(tmp_path):
    _cfg, c = make(tmp_path)
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "x:y"):
        r = c.get(TOP, headers={"Host": host})
        assert r.status_code == 400 and r.json["error"].startswith("Host:"), (host, r.json)
        r = c.post("/v1/events", json=[], headers={"Host": host})
        assert r.status_code == 400 and r.json["error"].startswith("Host:")
    for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST."):
        r = c.get(TOP, headers={"Host": host})
        assert r.status_code == 400 and r.json["error"].startswith("k:"), (host, r.json)
    assert c.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200
    # Configured names, and "*" for any.
    _cfg, c = make(tmp_path, allowed_hosts=["tally.internal"])
    assert c.get(TOP, headers={"Host": "tally.internal:443"}).json["error"].startswith("k:")
    _cfg, c = make(tmp_path, allowed_hosts=["*"])
    assert c.get(TOP, headers={"Host": "evil.example"}).json["error"].startswith("k:")


def test_invented_keys_get_no_bucket_and_one_address_shares_one(tmp_path):
    _cfg, c = make(tmp_path, api_keys=[KEY], rate_limit_per_s=0.001, rate_limit_burst=3)
    # A fresh invented key per request: 401, and no bucket is made for it.
    for i in range(20):
        r = c.get(TOP, headers={"X-API-Key": f"invented-key-{i:04d}"})
        assert r.status_code == 401 and r.json["error"] == "X-API-Key: not a valid key"
    # Anonymous reads share their address's bucket: 3, then 429 with Retry-After.
    codes = [c.get(TOP).status_code for _ in range(4)]
    assert codes == [400, 400, 400, 429]
    r = c.get(TOP)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # The valid key has its own bucket.
    codes = [c.get(TOP, headers={"X-API-Key": KEY}).status_code for _ in range(4)]
    assert codes == [400, 400, 400, 429]


def _flood(path: str, keys: list[str], out) -> None:
    from serving_layer.metrics import RateLimiter

    limiter = RateLimiter(path, 0.001, 5)
    out.put(sum(limiter.take(k) == 0 for k in keys))


def test_the_buckets_are_shared_by_processes(tmp_path):
    """Two workers (processes) on one state dir: a key gets its burst once, not once per worker."""
    path = str(tmp_path / "run" / "ratelimit.sqlite")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_flood, args=(path, ["k:one"] * 20, out)) for _ in range(2)]
    for p in procs:
        p.start()
    allowed = out.get(timeout=60) + out.get(timeout=60)
    for p in procs:
        p.join(timeout=60)
    assert allowed == 5


def test_many_keys_do_not_reset_the_live_buckets(tmp_path):
    from serving_layer.metrics import RateLimiter

    now = [1_000.0]
    limiter = RateLimiter(tmp_path / "rl.sqlite", 0.001, 2, clock=lambda: now[0], max_buckets=50)
    assert [limiter.take("a:victim") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.take("a:victim") > 0
    for i in range(500):  # 500 addresses: past max_buckets they share the overflow bucket
        limiter.take(f"a:10.0.{i // 256}.{i % 256}")
    now[0] += 6  # past the collection interval
    limiter.take("a:another")
    assert limiter.take("a:victim") > 0  # still limited: its state was never dropped
    assert limiter.buckets() <= 52


def test_a_custom_method_adds_no_label(tmp_path):
    from serving_layer import metrics

    _cfg, c = make(tmp_path)
    for method in ("FOOBAR", "X-" + "Z" * 40, "PROPFIND"):
        assert c.open(TOP, method=method).status_code == 405
    text = metrics.render()[0].decode()
    assert "FOOBAR" not in text and "PROPFIND" not in text and "ZZZZ" not in text
    assert 'method="other"' in text


def test_a_non_loopback_bind_is_refused(tmp_path):
    from serving_layer.server import check_bind

    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path)})
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(cfg, host, "tally serve")
    with pytest.raises(ConfigError, match="slow clients"):
        check_bind(cfg, "0.0.0.0", "tally serve")
    # Behind a proxy (the front door's nginx, or serve.behind_proxy), keys are still needed.
    with pytest.raises(ConfigError, match="serve.api_keys"):
        check_bind(cfg, "0.0.0.0", "tally front up", proxied=True)
    keyed = cfg.replace(serve={"api_keys": (KEY,), "behind_proxy": True})
    check_bind(keyed, "10.1.2.3", "tally serve")
    check_bind(cfg.replace(serve={"open_writes": True}), "0.0.0.0", "tally front up", proxied=True)
