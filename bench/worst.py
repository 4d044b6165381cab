"""The worst case of each query endpoint: the longest range, the largest k, the finest
granularity, on a full installation and on an empty one, against `tally serve` (one worker).

    python bench/worst.py [--days 400] [--videos 2000] [--rows-per-day 20000] [--work DIR]

Prepares once (kept in --work, keyed by the sizes and the day): ``--days`` published days ending
yesterday (a synthetic per-minute table per day, ``--rows-per-day`` minute rows over ``--videos``
videos), today's minutes in HBase speed views with a progress record one minute old; and an
empty installation (nothing published, empty speed tables, the same progress record). Then, per
installation, every case once on a cold worker (its caches empty) and then three times warm,
and the reference (`GET /healthz`): cold ms, warm median ms, the warm median against the
reference's, the answer's size. The case "slid by 1 min" moves both ends of the long top-K by
a minute, as a sliding window does: the whole days summed before are not summed again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.serve as serve_bench  # noqa: E402
from schemas.config import load_config  # noqa: E402
from schemas.event import format_ms  # noqa: E402

DAY = 86_400_000
MIN = 60_000


def prepare(cfg, days: int, videos: int, rows_per_day: int, work: Path, full: bool) -> list[str]:
    """The installation's data (once per key); returns the busiest videos."""
    import pyarrow as pa

    from speed_layer.store import HBaseSpeedStore, MinuteCount
    from tally.devstack.provision import create_lake, create_tables
    from tally.devstack.worlds import day_ms, publish_minutes

    today = dt.datetime.now(dt.timezone.utc).date()
    key = f"{today}-{days}-{videos}-{rows_per_day}-{'full' if full else 'empty'}"
    work.mkdir(parents=True, exist_ok=True)
    marker = work / f"data-{key}.json"
    create_tables(cfg)
    create_lake(cfg)  # as `tally stack up` leaves a new installation
    store = HBaseSpeedStore(cfg)
    now = int(time.time() * 1000)
    # The progress record is written on every run: one minute old, every earlier hour closed.
    store.write_progress({"max_event_time": format_ms(now - 30_000),
                          "watermark": format_ms(now - MIN), "updated_at": format_ms(now - 1000),
                          "dropped_late": 0})
    ids = [f"video{i:05d}" for i in range(videos)]
    if marker.exists():
        return json.loads(marker.read_text())["busiest"]
    if full:
        rng = random.Random(5)
        weights = [1 / (i + 1) for i in range(videos)]  # Zipf: a few videos hold most rows
        t0 = time.perf_counter()
        for d in range(days, 0, -1):
            day = today - dt.timedelta(days=d)
            lo = day_ms(day)
            vids = rng.choices(ids, weights, k=rows_per_day)
            minutes = [lo + rng.randrange(1440) * MIN for _ in range(rows_per_day)]
            seen = {}
            for v, m in zip(vids, minutes):
                seen[(v, m)] = seen.get((v, m), 0) + 1
            table = pa.table({
                "video_id": [v for v, _ in seen], "event_type": ["view"] * len(seen),
                "bucket_start": pa.array([m * 1000 for _, m in seen], pa.timestamp("us", "UTC")),
                "count": pa.array(list(seen.values()), pa.int64()),
                "watch_ms": pa.array([c * 1000 for c in seen.values()], pa.int64())})
            publish_minutes(cfg, day.isoformat(), table)
            if d % 50 == 0:
                print(f"data: {days - d + 1}/{days} days published "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
        lo = day_ms(today)
        rows = {}
        for v in rng.choices(ids, weights, k=rows_per_day):
            m = lo + rng.randrange(max(1, (now - lo) // MIN)) * MIN
            rows[(v, m)] = rows.get((v, m), 0) + 1
        store.write_minutes([MinuteCount(v, "view", m, c, c * 1000) for (v, m), c in rows.items()])
    marker.write_text(json.dumps({"busiest": ids[:10]}))
    return ids[:10]


def get(port: int, path: str, params: dict) -> tuple[float, int]:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}" if params else \
        f"http://127.0.0.1:{port}{path}"
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=300) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    took = time.perf_counter() - t0
    if status != 200:
        raise SystemExit(f"{url}: {status} {body[:300]!r}")
    return took * 1000, len(body)


def cases(now: int, video: str) -> list[tuple[str, str, dict]]:
    long_from = format_ms(now - 399 * DAY)
    return [
        ("counts 400 d by hour", f"/v1/videos/{video}/counts",
         {"from": long_from, "to": format_ms(now), "granularity": "hour"}),
        ("counts 400 d by day", f"/v1/videos/{video}/counts",
         {"from": long_from, "to": format_ms(now), "granularity": "day"}),
        ("counts 7 d by minute", f"/v1/videos/{video}/counts",
         {"from": format_ms(now - 7 * DAY + MIN), "to": format_ms(now), "granularity": "minute"}),
        ("counts 400 d future", f"/v1/videos/{video}/counts",
         {"from": format_ms(now + DAY), "to": format_ms(now + 400 * DAY)}),
        ("top k=1000 400 d", "/v1/top", {"from": long_from, "to": format_ms(now), "k": "1000"}),
        ("top slid by 1 min", "/v1/top", {"from": format_ms(now - 399 * DAY + MIN),
                                           "to": format_ms(now + MIN), "k": "1000"}),
        ("top k=1000 400 d future", "/v1/top",
         {"from": format_ms(now + DAY), "to": format_ms(now + 400 * DAY), "k": "1000"}),
    ]


def run(cfg, port: int, work: Path, video: str, label: str) -> list[tuple]:
    serve_bench.PREFIX = cfg.hbase.table_prefix  # start_server's server reads these tables
    proc = serve_bench.start_server(cfg, port, 1, work / f"serve-{label}.log", ("catalog_ttl_s=60",))
    out = []
    try:
        ref = statistics.median(get(port, "/healthz", {})[0] for _ in range(5))
        now = int(time.time() * 1000)
        for name, path, params in cases(now, video):
            cold, size = get(port, path, params)
            warm = statistics.median(get(port, path, params)[0] for _ in range(3))
            out.append((label, name, cold, warm, warm / ref, size))
            print(f"  {label:<6} {name:<26} cold {cold:8.1f} ms  warm {warm:8.1f} ms  "
                  f"({warm / ref:6.1f}x ref {ref:.2f} ms)  {size / 1024:8.1f} KiB", flush=True)
    finally:
        serve_bench.stop_server(proc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="worst case per query endpoint")
    ap.add_argument("--days", type=int, default=400)
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--rows-per-day", type=int, default=20_000)
    ap.add_argument("--port", type=int, default=0, help="default: serve.port + 9")
    ap.add_argument("--work", default=None, help="default: <state dir>/bench-worst")
    args = ap.parse_args()
    base = load_config()
    work = Path(args.work or base.state_path / "bench-worst")
    work.mkdir(parents=True, exist_ok=True)
    port = args.port or base.serve.port + 9
    first = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=args.days)
    results = []
    for label, full in (("full", True), ("empty", False)):
        cfg = base.replace(state_dir=str(work / label), lake={"uri": ""},
                           hbase={"table_prefix": f"benchworst{label}"},
                           batch={"horizon_start": first.isoformat()})
        busiest = prepare(cfg, args.days, args.videos, args.rows_per_day, work / label, full)
        print(f"{label}: {args.days if full else 0} published days, {args.videos} videos")
        results += run(cfg, port, work, busiest[0], label)
    worst = max(results, key=lambda r: r[2])
    print(f"slowest cold case: {worst[0]} {worst[1]} {worst[2]:.0f} ms; slowest warm: "
          f"{max(r[3] for r in results):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
