"""Each worker's cache of speed views by UTC hour, for the two queries that read many of them:
top-K (per event type and hour, every video's total over the hour, summed from the speed layer's
top-K table as a ``topk.Sparse``) and merged counts (per video, event type and hour, the hour's
minutes as one numpy row of 60 counts then 60 watch_ms).

An hour that ended before the speed layer's watermark (from its progress record, read BEFORE the
hour's rows) cannot change any more — a later event for it is dropped as late, a replayed
micro-batch writes the same values — so it is kept until evicted. Top-K also keeps an hour still
open, read again in the background once older than ``serve.top_ttl_s`` (the request that finds it
older is answered with it; only one ``STALE_TTLS`` times older is read by the request); counts
never keep a video's open hour: they scan it on every request, or, in a busy worker, take it
from top-K's snapshot of the hour (``serve.counts_open_shared``). The top-K cache also keeps a query's sum
of the parts that cannot change (published batch views, closed hours), keyed by those parts.
Entries are bounded by their size in memory (the project's one cache primitive, cache.py;
``serve.top_cache_mb``, ``serve.counts_cache_mb``; least recently used first out); 0 turns a
cache off.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from adapters import log
from serving_layer.cache import ByteCache

# An open hour older than ttl_s is still answered (and read again in the background) until it
# is this many ttl_s older than that; then the request reads it itself.
STALE_TTLS = 3
LOG = log.get("serve.cache")


class SpeedHourCache:
    """Values kept as (value, closed when read, read at) in a :class:`ByteCache`: a closed one
    until evicted, an open one while younger than ``ttl_s`` (and served stale by :meth:`hour`)."""

    def __init__(self, max_bytes: int, ttl_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache = ByteCache(max_bytes, clock)
        self._lock = threading.Lock()
        self._refreshing: set[tuple] = set()

    @property
    def enabled(self) -> bool:
        return self._cache.enabled

    @property
    def bytes(self) -> int:
        return self._cache.bytes

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, key: tuple) -> Any | None:
        """The value kept for ``key`` when it was closed, or open and read less than ``ttl_s``
        ago; else None."""
        if not self.enabled:
            return None
        entry = self._cache.get(key)
        if entry is None:
            return None
        value, was_closed, read_at = entry
        return value if was_closed or self.clock() - read_at < self.ttl_s else None

    def put(self, key: tuple, value: Any, closed: bool, size: int, age_s: float = 0.0) -> None:
        """Keep ``value`` (about ``size`` bytes, read ``age_s`` seconds ago); evicts the least
        recently used beyond the bound."""
        if self.enabled:
            self._cache.put(key, (value, closed, self.clock() - age_s), size + ENTRY_TUPLE)

    def hour(self, key: tuple, closed: bool, load: Callable[[], Any]) -> Any:
        """An hour's value (``key`` names the table, event type and hour): kept when the hour was
        ``closed`` when read; else ``load()`` — except for an hour still open whose value is
        older than ``ttl_s`` but not by more than ``STALE_TTLS`` times it: that one is answered
        at once and read again in the background (stale-while-revalidate), so no request waits
        for a scan over every video's open hour."""
        entry = self._cache.get(key) if self.enabled else None
        if entry is not None:
            value, was_closed, read_at = entry
            age = self.clock() - read_at
            if was_closed or age < self.ttl_s:
                return value
            # A value read while open is never kept for a closed hour: sums of closed hours
            # are kept for good, so they must be read after the hour closed.
            if not closed and age < self.ttl_s * (1 + STALE_TTLS):
                with self._lock:
                    start = key not in self._refreshing
                    self._refreshing.add(key)
                if start:
                    threading.Thread(target=self._refresh, args=(key, load), daemon=True,
                                     name="tally-hour-refresh").start()
                return value
        value = load()
        self.put(key, value, closed, value.nbytes, getattr(value, "age_s", 0.0))
        return value

    def _refresh(self, key: tuple, load: Callable[[], Any]) -> None:
        try:
            value = load()
            entry = self._cache.get(key)
            if entry is not None and entry[1]:
                return  # closed and read meanwhile: that one is final
            self.put(key, value, False, value.nbytes, getattr(value, "age_s", 0.0))
        except Exception as exc:  # noqa: BLE001 - the next request reads it itself once too old
            LOG.warning("background read of %s failed: %s: %s", key, type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
        finally:
            with self._lock:
                self._refreshing.discard(key)


# The (value, closed, read at) tuple each entry is kept as, with its float.
ENTRY_TUPLE = 64 + 24
