"""The per-worker cache of speed views by hour (serving_layer/speedcache.py)."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from serving_layer.sizes import ENTRY, key_bytes
from serving_layer.speedcache import ENTRY_TUPLE, STALE_TTLS, SpeedHourCache


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


def wait_for(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_a_closed_hour_is_read_once_an_open_one_again_in_the_background_after_the_ttl():
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
    assert open_.calls == 1
    clock.t += 0.2
    # Past the TTL: answered with what is kept at once, read again in the background.
    assert rows(cache.hour(("t", "view", 3_600_000), False, open_)) == {"v2": (1, 0)}
    wait_for(lambda: rows(cache.hour(("t", "view", 3_600_000), False, open_)) == {"v2": (5, 0)})
    assert open_.calls == 2
    clock.t += 3600
    assert rows(cache.hour(("t", "view", 0), True, closed)) == {"v1": (3, 30)}
    assert closed.calls == 1


def test_an_open_hour_far_past_the_ttl_is_read_by_the_request():
    clock = Clock()
    cache = SpeedHourCache(1 << 20, ttl_s=2.0, clock=clock)
    load = Loader({"v1": (1, 0)})
    cache.hour(("t", "view", 0), False, load)
    load.totals = {"v1": (7, 0)}
    clock.t += 2.0 * (1 + STALE_TTLS) + 0.1
    assert rows(cache.hour(("t", "view", 0), False, load)) == {"v1": (7, 0)}
    assert load.calls == 2


def test_a_failed_background_read_keeps_the_old_value_until_it_is_too_old():
    clock = Clock()
    cache = SpeedHourCache(1 << 20, ttl_s=2.0, clock=clock)
    load = Loader({"v1": (1, 0)})
    cache.hour(("t", "view", 0), False, load)

    def broken():
        load.calls += 1
        raise ConnectionError("hbase: down")

    clock.t += 2.5
    assert rows(cache.hour(("t", "view", 0), False, broken)) == {"v1": (1, 0)}
    wait_for(lambda: not cache._refreshing)
    assert load.calls == 2
    clock.t += 2.0 * STALE_TTLS
    with pytest.raises(ConnectionError):
        cache.hour(("t", "view", 0), False, broken)


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
    per_hour = loads[0]().nbytes + ENTRY + ENTRY_TUPLE + key_bytes(("t", "view", 0))
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


def test_a_value_read_earlier_by_another_worker_ages_from_that_read():
    class Aged:
        def __init__(self, totals, age_s):
            self.table, self.age_s, self.nbytes = table(totals), age_s, 100

    clock = Clock()
    cache = SpeedHourCache(1 << 20, ttl_s=2.0, clock=clock)
    calls = []

    def load():
        calls.append(1)
        return Aged({"v1": (len(calls), 0)}, age_s=1.5)

    assert rows(cache.hour(("t", "view", 0), False, load).table) == {"v1": (1, 0)}
    clock.t += 0.4  # 1.9 s after the read it came from: still within the TTL
    assert rows(cache.hour(("t", "view", 0), False, load).table) == {"v1": (1, 0)}
    assert len(calls) == 1
    clock.t += 0.2  # 2.1 s: read again (in the background)
    cache.hour(("t", "view", 0), False, load)
    wait_for(lambda: len(calls) == 2)
