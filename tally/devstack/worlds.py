"""Worlds for the tests, the benchmarks and the docs' pictures: published batch views made
without Spark, exactly as the batch job lays them out (files listed by a publication entry),
from minute rows whose roll-ups are computed here, independently of the batch layer."""

from __future__ import annotations

import io
from typing import Iterable

from schemas.granularity import GRANULARITY_MS, day_start_ms


def day_ms(day) -> int:
    """The first instant of a UTC day (a date or YYYY-MM-DD) in epoch ms."""
    return day_start_ms(str(day))


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

    from adapters.lake import lake_store
    from batch_layer.catalog import Catalog, new_version, now_rfc3339, version_key

    store = store or lake_store(cfg)
    version = version or new_version()
    minutes = minute_rows if isinstance(minute_rows, pa.Table) else view_table(minute_rows)
    views = {}
    for g, size in GRANULARITY_MS.items():
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
    if not result.published:
        raise RuntimeError(f"{day}: version {version} not published: {result}")
    return version
