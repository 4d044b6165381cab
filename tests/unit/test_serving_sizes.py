"""The caches' byte budgets hold in real memory: what they count for their entries is at least
what the entries take (tracemalloc for Python and numpy, Arrow's pool for Arrow buffers), and not
far above it."""

from __future__ import annotations

import gc
import random
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from serving_layer.batch import IndexedView
from serving_layer.cache import ByteCache
from serving_layer.hourshare import HourSnapshot, snapshot_table
from serving_layer.speedcache import SpeedHourCache
from serving_layer.topk import Sparse, VideoIndex, add_up
from speed_layer.views import Progress


def measured(fill) -> tuple[int, int]:
    """(bytes taken, bytes counted) by ``fill()``, which returns the cache it filled."""
    gc.collect()
    tracemalloc.start()
    try:
        py0, arrow0 = tracemalloc.get_traced_memory()[0], pa.total_allocated_bytes()
        cache = fill()
        gc.collect()
        taken = tracemalloc.get_traced_memory()[0] - py0 + pa.total_allocated_bytes() - arrow0
    finally:
        tracemalloc.stop()
    return taken, cache.bytes


def vid(i: int) -> str:
    return f"video{i:07d}"


def speed_cache(kind: str):
    index = VideoIndex()
    index.numbers(vid(i) for i in range(3000))  # ids numbered before: not the cache's memory
    rng = random.Random(7)
    cache = SpeedHourCache(1 << 34, ttl_s=60)
    for i in range(1500):
        if kind == "empty hours":  # what random video ids in counts queries leave
            cache.put((vid(rng.randrange(10**7)), "view", i * 3_600_000), (), True, 0)
        elif kind == "hour rows":
            row = np.zeros(120, np.int64)
            row[i % 60] = i
            cache.put((vid(i), "view", i * 3_600_000), row, True, row.nbytes + 112)
        elif kind == "hour totals":
            n = rng.randrange(1, 400)
            s = Sparse(index.numbers(vid(rng.randrange(3000)) for _ in range(n)),
                       np.ones(n, np.int64), np.ones(n, np.int64))
            cache.put(("speed", "tally_top", "view", i, i + 1), s, True, s.nbytes)
        elif kind == "sums":
            d = add_up(index, None, [])
            cache.put(("sum", rng.randbytes(16)), d, True, d.nbytes)
        elif kind == "open hours" and i < 60:
            n = 500
            cols = ([vid(rng.randrange(3000)) for _ in range(n)], [j % 60 for j in range(n)],
                    list(range(n)), list(range(n)))
            progress = Progress.parse({"watermark": "2025-11-26T09:50:00Z", "batch_id": i})
            snap = HourSnapshot(snapshot_table(cols, progress), 0.0, index)
            cache.put(("tally_top", "view", i), snap, False, snap.nbytes)
    return cache


@pytest.mark.parametrize("kind", ["empty hours", "hour rows", "hour totals", "sums", "open hours"])
def test_speed_cache_counts_what_its_entries_take(kind):
    taken, counted = measured(lambda: speed_cache(kind))
    assert taken <= counted <= 2.0 * taken + 4096, (taken, counted)


def test_view_cache_counts_what_its_views_take():
    def fill(days=6):
        lru = ByteCache(1 << 34)
        rng = random.Random(3)
        for d in range(days):
            n = 4000
            videos = [vid(rng.randrange(2000)) for _ in range(n)]
            table = pa.table({
                "video_id": videos, "event_type": [rng.choice(["view", "like"]) for _ in range(n)],
                "bucket_start": pa.array([rng.randrange(24) * 3_600_000_000 for _ in range(n)],
                                         pa.timestamp("us", "UTC")),
                "count": pa.array([1] * n, pa.int64()), "watch_ms": pa.array([2] * n, pa.int64())})
            view = IndexedView(table)
            lru.put((f"2025-11-{d + 1:02d}", "20251101T000000Z-aaaaaaaa", "hour"), view, view.nbytes)
            del table
        return lru

    fill(1)  # Arrow's compute functions allocate once, on first use
    taken, counted = measured(fill)
    assert taken <= counted + 16_384 and counted <= 2.0 * taken, (taken, counted)
