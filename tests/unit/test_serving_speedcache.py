"""The per-worker cache of speed views by hour (serving_layer/speedcache.py)."""

from __future__ import annotations

import pyarrow as pa

from serving_layer.speedcache import ENTRY_BYTES, SpeedHourCache


def table(totals: dict[str, tuple[int, int]]) -> pa.Table:
    return pa.table({"video_id": list(totals), "count": [c for c, _ in totals.values()],
                     "watch_ms": [w for _, w in totals.values()]})


def rows(t: pa.Table) -> dict[str, tuple[int, int]]:
    return {r["video_id"]: (r["count"], r["watch_ms"]) for r in t.to_pylist()}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Loader:
    """Stands for the HBase scan: counts its calls, returns the current totals."""

    def __init__(self, totals):
        self.totals = totals
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return table(self.totals)


def test_a_closed_hour_is_read_once_an_open_one_again_after_the_ttl():
    clock = Clock()
    cache = SpeedHourCache(1 << 20, ttl_s=2.0, clock=clock)
    closed, open_ = Loader({"v1": (3, 30)}), Loader({"v2": (1, 0)})
    for _ in range(3):
        assert rows(cache.hour(("t", "view", 0), True, closed)) == {"v1": (3, 30)}
        assert rows(cache.hour(("t", "view", 3_600_000), False, open_)) == {"v2": (1, 0)}
    assert (closed.calls, open_.calls) == (1, 1)
    open_.totals = {"v2": (5, 0)}
    clock.t += 1.9
    assert rows(cache.hour(("t", "view", 3_600_000), False, open_)) == {"v2": (1, 0)}  # within the TTL
    clock.t += 0.2
    assert rows(cache.hour(("t", "view", 3_600_000), False, open_)) == {"v2": (5, 0)}
    clock.t += 3600
    assert rows(cache.hour(("t", "view", 0), True, closed)) == {"v1": (3, 30)}
    assert (closed.calls, open_.calls) == (1, 2)


def test_an_hour_read_while_open_is_kept_once_it_is_read_closed():
    clock = Clock()
    cache = SpeedHourCache(1 << 20, ttl_s=2.0, clock=clock)
    load = Loader({"v1": (1, 0)})
    cache.hour(("t", "view", 0), False, load)
    clock.t += 5
    load.totals = {"v1": (2, 0)}
    assert rows(cache.hour(("t", "view", 0), True, load)) == {"v1": (2, 0)}  # the stale open read is not kept
    clock.t += 5000
    assert rows(cache.hour(("t", "view", 0), True, load)) == {"v1": (2, 0)}
    assert load.calls == 2


def test_bounded_by_size_least_recently_used_out_and_zero_is_off():
    loads = {h: Loader({f"v{i}": (i, 0) for i in range(10)}) for h in range(3)}
    per_hour = loads[0]().nbytes + ENTRY_BYTES
    loads[0].calls = 0
    cache = SpeedHourCache(2 * per_hour, ttl_s=60)
    cache.hour(("t", "view", 0), True, loads[0])
    cache.hour(("t", "view", 1), True, loads[1])
    cache.hour(("t", "view", 0), True, loads[0])  # 0 is now the most recently used
    cache.hour(("t", "view", 2), True, loads[2])  # evicts 1
    assert cache.bytes <= 2 * per_hour
    cache.hour(("t", "view", 0), True, loads[0])
    cache.hour(("t", "view", 1), True, loads[1])
    assert [loads[h].calls for h in range(3)] == [1, 2, 1]

    off = SpeedHourCache(0, ttl_s=60)
    load = Loader({"v": (1, 0)})
    off.hour(("t", "view", 0), True, load)
    off.hour(("t", "view", 0), True, load)
    assert load.calls == 2 and off.bytes == 0
