"""The one cache primitive under every serving cache: a thread-safe LRU bounded by the bytes its
entries really take (cachetools' LRUCache with a size per entry, sizes.py), with an optional
time to live per entry. The caches built on it (batch views, publication entries, speed hours,
top-K sums, answer templates, the progress record) differ only in their keys, budgets and what
they decide about freshness."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable

import cachetools

from serving_layer.sizes import ENTRY, key_bytes

MISSING: Any = object()


class ByteCache:
    """At most ``max_bytes`` of entries (value bytes as given by the caller, plus the key and
    the cache's own slot), least recently used out first. An entry larger than the whole budget
    is not kept. 0 bytes: a cache that keeps nothing."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._lru: cachetools.LRUCache = cachetools.LRUCache(max(1, max_bytes),
                                                             getsizeof=lambda item: item[1])
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def bytes(self) -> int:
        return self._lru.currsize

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value kept for ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            item = self._lru.get(key)
            if item is not None and item[2] is not None and self.clock() >= item[2]:
                del self._lru[key]
                item = None
            if item is None:
                self.misses += 1
                return default
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int, ttl_s: float | None = None) -> bool:
        """Keep ``value`` (``nbytes`` of its own), for ``ttl_s`` seconds when given; False when
        it is larger than the whole budget (then any older value of ``key`` is dropped too)."""
        size = nbytes + key_bytes(key) + ENTRY
        expires = self.clock() + ttl_s if ttl_s is not None else None
        with self._lock:
            if size > self.max_bytes:
                self._lru.pop(key, None)
                return False
            self._lru[key] = (value, size, expires)
            return True

    def pop(self, key: Hashable) -> Any:
        with self._lock:
            item = self._lru.pop(key, None)
        return item[0] if item is not None else None

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._lru.keys())
