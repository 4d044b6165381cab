"""A request's cost and a worker's memory are bounded, against the real stack and a real
``tally serve`` (gunicorn, one worker, small cache budgets): a 400-day top-K in the future answers
without writing a file, and a cache-busting load — thousands of distinct random counts and top-K
queries, most for videos that do not exist, ranges up to 400 days — keeps the worker's resident
memory under its cache budgets plus the overhead the docs state."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import time

import requests

from speed_layer.store import HBaseSpeedStore
from tests.integration.servekit import DAY, build_published_world, iso
from tests.integration.speedkit import make_installation

CACHE_MB = {"cache_mb": 16, "top_cache_mb": 8, "counts_cache_mb": 8}
OVERHEAD_MB = 48  # docs/serving.md, "Cost of a request": beyond the budgets, per worker
REQUESTS = 1500  # per endpoint


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_cache_busting_load_keeps_the_worker_under_its_budget(stack, tmp_path, unique):
    first = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=3)
    env = {"TALLY_BATCH__HORIZON_START": first.isoformat(), "TALLY_SERVE__WORKERS": "1",
           "TALLY_SERVE__CATALOG_TTL_S": "0"}
    env.update({f"TALLY_SERVE__{k.upper()}": str(v) for k, v in CACHE_MB.items()})
    inst = make_installation(stack, tmp_path, unique, **env)
    world = build_published_world(inst, first, days=3, batch_days=1, events=3000, videos=20,
                                  seed=5)
    now = int(time.time() * 1000)
    # A speed layer that is up to date: every hour but the last is closed (kept by the caches).
    HBaseSpeedStore(inst.cfg).write_progress({
        "max_event_time": iso(now - 30_000), "watermark": iso(now - 60_000),
        "updated_at": iso(now - 1000), "dropped_late": 0})
    port = 18000 + random.randrange(1000)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tally.cli", "serve", "--port", str(port)],
                            env=inst.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    s = requests.Session()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                pid = s.get(f"{base}/healthz", timeout=2).json()["pid"]
                break
            except requests.RequestException:
                assert time.monotonic() < deadline and proc.poll() is None, \
                    (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        hours = inst.cfg.state_path / "run" / "top-hours"

        def files() -> int:
            return len(list(hours.glob("*.arrow"))) if hours.exists() else 0

        # 400 days in the future: every bucket an empty answer, nothing read, no file written.
        t0 = time.monotonic()
        r = s.get(f"{base}/v1/top", params={"from": iso(now + DAY), "to": iso(now + 400 * DAY)},
                  timeout=30)
        future_s = time.monotonic() - t0
        assert r.status_code == 200 and r.json()["items"] == [] and files() == 0
        assert future_s < 1.0, future_s

        rng = random.Random(11)

        def counts(video: str) -> None:
            span = rng.choice([3_600_000, DAY, 7 * DAY, 30 * DAY, 398 * DAY])
            lo = now - rng.randrange(span, 400 * DAY + 1)
            gran = "day" if span == 398 * DAY else "hour"
            r = s.get(f"{base}/v1/videos/{video}/counts", timeout=30, params={
                "from": iso(lo + rng.randrange(60) * 60_000), "to": iso(lo + span),
                "granularity": gran})
            assert r.status_code == 200, r.text

        def top() -> None:
            lo = now - rng.randrange(DAY, 399 * DAY)
            hi = min(now + DAY, lo + rng.randrange(60_000, 398 * DAY))
            r = s.get(f"{base}/v1/top", timeout=30, params={
                "from": iso(lo + rng.randrange(60) * 60_000), "to": iso(hi), "k": "10"})
            assert r.status_code == 200, r.text

        def load(n: int) -> None:
            for _ in range(n):
                video = (rng.choice(world.videos) if rng.random() < 0.3
                         else "x" + "".join(rng.choices("abcdefghijklmnop0123456789", k=12)))
                counts(video)
                top()

        for video in world.videos[:10]:  # warm (imports, pools) with the caches nearly empty
            for k in range(3):
                r = s.get(f"{base}/v1/videos/{video}/counts", timeout=30, params={
                    "from": iso(now - (k + 2) * 3_600_000), "to": iso(now - (k + 1) * 3_600_000)})
                assert r.status_code == 200
                r = s.get(f"{base}/v1/top", params={"from": iso(now - (k + 2) * 3_600_000),
                                                    "to": iso(now - k * 3_600_000)}, timeout=30)
                assert r.status_code == 200
        before = rss_mb(pid)
        t0 = time.monotonic()
        load(REQUESTS)
        took = time.monotonic() - t0
        after = rss_mb(pid)
        budget = sum(CACHE_MB.values())
        print(f"rss {before:.0f} -> {after:.0f} MB after {2 * REQUESTS} distinct queries in "
              f"{took:.0f}s; budgets {budget} MB + overhead {OVERHEAD_MB} MB; "
              f"{files()} open-hour files")
        assert after - before <= budget + OVERHEAD_MB, (before, after)
        assert files() <= 6  # the open hours near now, not one per distinct query
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
