"""Each worker's cache of speed views by UTC hour, for the two queries that read many of them:
top-K (per event type and hour, every video's total over the hour, an Arrow table summed from the
speed layer's top-K table) and merged counts (per video, event type and hour, the hour's minutes).

An hour that ended before the speed layer's watermark (from its progress record, read BEFORE the
hour's rows) cannot change any more — a later event for it is dropped as late, a replayed
micro-batch writes the same values — so it is kept until evicted. Top-K also keeps an hour still
open, read again once older than ``serve.top_ttl_s`` (how stale its speed part may be); counts
never keep an open hour, they read it on every request. The top-K cache also keeps a query's sum
of the parts that cannot change (published batch views, closed hours), keyed by those parts.
Entries are bounded by an estimate of
their size (``serve.top_cache_mb``, ``serve.counts_cache_mb``; least recently used first out);
0 turns a cache off.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable

ENTRY_BYTES = 200  # an entry's own cost beside its value (key, tuple, slot)


class SpeedHourCache:
    def __init__(self, max_bytes: int, ttl_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[Any, bool, float, int]] = OrderedDict()
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: tuple) -> Any | None:
        """The value kept for ``key`` when it was closed, or open and read less than ``ttl_s``
        ago; else None."""
        if self.max_bytes <= 0:
            return None
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, was_closed, read_at, _ = entry
            if was_closed or now - read_at < self.ttl_s:
                self._entries.move_to_end(key)
                return value
        return None

    def put(self, key: tuple, value: Any, closed: bool, size: int) -> None:
        """Keep ``value`` (about ``size`` bytes); evicts the least recently used beyond the bound."""
        size += ENTRY_BYTES
        if size > self.max_bytes:
            return
        now = self.clock()
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[3]
            self._entries[key] = (value, closed, now, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped[3]

    def hour(self, key: tuple, closed: bool, load: Callable[[], Any]) -> Any:
        """An hour's Arrow table (``key`` names the table, event type and hour): kept when the hour
        is ``closed``, or open and read less than ``ttl_s`` ago; else ``load()``."""
        value = self.get(key)
        if value is None:
            value = load()
            self.put(key, value, closed, value.nbytes)
        return value
