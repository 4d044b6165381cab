"""Helpers of the serving-layer tests (unit and integration) and of ``bench/serve.py``.

* :func:`publish_minutes` publishes a version of a day whose views are the roll-ups of given
  per-minute counts: the same files (``views/date=D/v=V/{minute,hour,day}/part-*.parquet``, the
  view schema) and the same publication entry fields the serving layer reads, written through
  the lake store (file:// or S3) and the real :class:`~batch_layer.catalog.Catalog`. It stands
  in for the Spark batch job where the job's own output is not under test (test_serving.py runs
  the real job) and a Spark start would cost most of a test's time budget.
* :class:`World` holds ground truth per (video, type, minute) and answers what the API must.
* :func:`build_world` makes one: generated traffic's exact truth, days before the horizon
  published as batch views, the rest written to the HBase speed views (days before the horizon
  hold WRONG speed counts on purpose, so a bucket answered from the wrong side shows).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import io
import logging
from dataclasses import dataclass, field
from typing import Iterable

DAY = 86_400_000
GRAN = {"minute": 60_000, "hour": 3_600_000, "day": DAY}


def day_ms(d: dt.date | str) -> int:
    d = dt.date.fromisoformat(d) if isinstance(d, str) else d
    return int(dt.datetime.combine(d, dt.time(), dt.timezone.utc).timestamp() * 1000)


def view_table(rows: Iterable[tuple[str, str, int, int, int]]):
    """A view-schema Arrow table from (video, type, bucket ms, count, watch_ms) rows."""
    import pyarrow as pa

    from batch_layer.views import VIEW_SCHEMA

    rows = list(rows)
    return pa.table({
        "video_id": [r[0] for r in rows], "event_type": [r[1] for r in rows],
        "bucket_start": pa.array([r[2] * 1000 for r in rows], pa.timestamp("us", tz="UTC")),
        "count": pa.array([r[3] for r in rows], pa.int64()),
        "watch_ms": pa.array([r[4] for r in rows], pa.int64())}).cast(VIEW_SCHEMA)


def rollup(minutes, size_ms: int):
    """A view-schema table at buckets of ``size_ms`` from a view-schema table of minutes, sorted
    as the batch job writes its files (by video, type, bucket)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from batch_layer.views import VIEW_SCHEMA

    us = pc.cast(minutes["bucket_start"], pa.int64())
    size_us = size_ms * 1000
    bucket = pc.multiply(pc.divide(us, size_us), size_us)  # integer division: floor (>= 1970)
    t = (pa.table({"video_id": minutes["video_id"], "event_type": minutes["event_type"],
                   "b": bucket, "count": minutes["count"], "watch_ms": minutes["watch_ms"]})
         .group_by(["video_id", "event_type", "b"])
         .aggregate([("count", "sum"), ("watch_ms", "sum")]))
    out = pa.table({"video_id": t["video_id"], "event_type": t["event_type"],
                    "bucket_start": pc.cast(t["b"], pa.timestamp("us", tz="UTC")),
                    "count": t["count_sum"], "watch_ms": t["watch_ms_sum"]}).cast(VIEW_SCHEMA)
    return out.sort_by([("video_id", "ascending"), ("event_type", "ascending"),
                        ("bucket_start", "ascending")])


def publish_minutes(cfg, day: str, minute_rows, version: str | None = None, store=None) -> str:
    """Publish a version of ``day`` whose views roll up ``minute_rows``: (video, type, minute
    ms, count, watch_ms) tuples or a view-schema Arrow table of minutes. Returns the version."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from batch_layer.catalog import Catalog, new_version, now_rfc3339, version_key
    from tally.lake import lake_store

    store = store or lake_store(cfg)
    version = version or new_version()
    minutes = minute_rows if isinstance(minute_rows, pa.Table) else view_table(minute_rows)
    views = {}
    for g, size in GRAN.items():
        table = rollup(minutes, size)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        key = f"{version_key(day, version)}/{g}/part-00000.parquet"
        store.put(key, buf.getvalue())
        views[g] = {"rows": table.num_rows, "files": [key]}
    events = int(pc.sum(minutes["count"]).as_py() or 0)
    watch = int(pc.sum(minutes["watch_ms"]).as_py() or 0)
    now = now_rfc3339()
    record = {"version": version, "computed_at": now, "code_version": "tests",
              "input": {"listed_at": now, "raw_rows": events, "distinct_events": events},
              "totals": {"events": events, "watch_ms": watch}, "views": views}
    result = Catalog(cfg, store).publish(day, record)
    assert result.published, result
    return version


@dataclass
class World:
    """Exact truth: (video, type, minute ms) -> (count, watch_ms)."""

    cfg: object
    truth: dict
    horizon_ms: int
    by_vt: dict = field(init=False)
    videos: list = field(init=False)

    def __post_init__(self) -> None:
        by_vt: dict = collections.defaultdict(dict)
        for (v, t, m), cw in self.truth.items():
            by_vt[(v, t)][m] = cw
        self.by_vt = by_vt
        totals = collections.Counter()
        for (v, _t, _m), (c, _w) in self.truth.items():
            totals[v] += c
        self.videos = sorted(totals, key=lambda v: (-totals[v], v))  # busiest first

    def expected_buckets(self, video, etype, lo, hi, size):
        out = {b: [0, 0] for b in range(lo, hi, size)}
        for m, (c, w) in self.by_vt.get((video, etype), {}).items():
            if lo <= m < hi:
                out[m // size * size][0] += c
                out[m // size * size][1] += w
        return out

    def expected_top(self, etype, lo, hi, k):
        acc: dict = collections.defaultdict(lambda: [0, 0])
        for (v, t, m), (c, w) in self.truth.items():
            if t == etype and lo <= m < hi:
                acc[v][0] += c
                acc[v][1] += w
        ranked = sorted(((v, c, w) for v, (c, w) in acc.items() if c > 0),
                        key=lambda r: (-r[1], r[0]))
        return [{"video_id": v, "count": c, "watch_ms": w} for v, c, w in ranked[:k]]


PROGRESS = {"max_event_time": "2026-11-27T10:00:00.000Z", "watermark": "2026-11-27T09:50:00.000Z",
            "updated_at": "2026-11-27T10:00:05Z", "dropped_late": 3}


def generated_truth(cfg, first_day: dt.date, days: int, events: int, videos: int,
                    seed: int) -> dict:
    """The generator's exact truth, in process: (video, type, minute ms) -> (count, watch_ms)."""
    from tally.generator import GeneratorOptions, build_traffic

    table = build_traffic(cfg, GeneratorOptions(events=events, videos=videos,
                                                start=first_day.isoformat(), days=days,
                                                seed=seed)).truth_table()
    return {(v, t, int(m.timestamp() * 1000)): (c, w) for v, t, m, c, w in zip(
        table["video_id"].to_pylist(), table["event_type"].to_pylist(),
        table["minute"].to_pylist(), table["count"].to_pylist(), table["watch_ms"].to_pylist())}


def build_world(cfg, first_day: dt.date, days: int, batch_days: int, events: int = 6000,
                videos: int = 40, seed: int = 7) -> World:
    """``days`` generated days from ``first_day``: the first ``batch_days`` published as batch
    views (``batch.horizon_start`` must be ``first_day``), all of them in the speed views
    (wrong on the batch side), a speed progress record."""
    from speed_layer.store import HBaseSpeedStore, MinuteCount

    truth = generated_truth(cfg, first_day, days, events, videos, seed)
    horizon = day_ms(first_day) + batch_days * DAY
    per_day: dict = collections.defaultdict(list)
    speed = []
    for (v, t, m), (c, w) in truth.items():
        if m < horizon:
            per_day[m // DAY].append((v, t, m, c, w))
            speed.append(MinuteCount(v, t, m, c + 1000, w + 7))
        else:
            speed.append(MinuteCount(v, t, m, c, w))
    for i in range(batch_days):
        d = first_day + dt.timedelta(days=i)
        publish_minutes(cfg, d.isoformat(), per_day.get(day_ms(d) // DAY, []))
    store = HBaseSpeedStore(cfg)
    for i in range(0, len(speed), 1000):  # short calls: each has the store's retry budget
        store.write_minutes(speed[i:i + 1000])
    store.write_progress(PROGRESS)
    return World(cfg, truth, horizon)


@contextlib.contextmanager
def serving(app):
    """The app on a free local port, in a thread (werkzeug's threaded server): its base URL."""
    import threading

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="tally-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
