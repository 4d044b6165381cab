"""The serving layer's one cache primitive: bytes bound, LRU order, time to live, counts."""

from __future__ import annotations

import threading

from serving_layer.cache import MISSING, ByteCache
from serving_layer.sizes import ENTRY, key_bytes


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_entries_live_for_their_ttl_only_and_absence_is_not_kept():
    clock = Clock()
    cache = ByteCache(1 << 20, clock)
    cache.put("p", None, 0, ttl_s=1.0)  # "no record yet" kept for one second, no longer
    assert cache.get("p", MISSING) is None
    clock.t += 0.999
    assert cache.get("p", MISSING) is None
    clock.t += 0.001
    assert cache.get("p", MISSING) is MISSING and len(cache) == 0 and cache.bytes == 0
    cache.put("q", "kept", 10)  # no ttl: until evicted
    clock.t += 10**6
    assert cache.get("q") == "kept"
    cache.put("z", "gone at once", 10, ttl_s=0.0)
    assert cache.get("z", MISSING) is MISSING
    assert (cache.hits, cache.misses) == (3, 2)


def test_bytes_bound_the_cache_least_recently_used_out_first():
    slot = ENTRY + key_bytes(("k", 0))
    cache = ByteCache(3 * (slot + 100))
    for i in range(3):
        assert cache.put(("k", i), i, 100)
    assert cache.bytes == 3 * (slot + 100) and cache.get(("k", 0)) == 0
    cache.put(("k", 3), 3, 100)  # ("k", 1) is the least recently used now
    assert cache.get(("k", 1)) is None and sorted(cache.keys()) == [("k", 0), ("k", 2), ("k", 3)]
    assert cache.put(("k", 0), "again", 50) and cache.bytes == 2 * (slot + 100) + slot + 50
    assert not cache.put(("k", 2), "too big", 10**6) and cache.get(("k", 2)) is None
    assert cache.pop(("k", 3)) == 3 and cache.bytes == slot + 50
    off = ByteCache(0)
    assert not off.enabled and not off.put("a", 1, 0) and off.get("a") is None


def test_threads_share_one_cache_and_its_bound_holds():
    cache = ByteCache(50 * (ENTRY + key_bytes(("t", 0, 0)) + 10))

    def work(n: int) -> None:
        for i in range(2000):
            cache.put(("t", n, i % 120), i, 10)
            cache.get(("t", n, (i * 7) % 120))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(cache) <= 50 and cache.bytes <= cache.max_bytes
    assert cache.bytes == len(cache) * (ENTRY + key_bytes(("t", 0, 0)) + 10)
