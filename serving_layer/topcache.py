"""Each worker's cache of the speed part of top-K: per (event type, UTC hour), every video's
total over the hour (an Arrow table), summed from the speed layer's top-K table.

Without it, a top-K over hours of speed views scans one HBase row per (hour, video) on every
request, which grows with the videos active in those hours. An hour that ended before the speed
layer's watermark (from its progress record) cannot change any more — a later event for it is
dropped as late, a replayed micro-batch writes the same values — so it is kept until evicted;
an hour still open is read again once older than ``serve.top_ttl_s``, which bounds how stale the
speed part of a top-K answer can be. The entries are bounded by an estimate of their size
(``serve.top_cache_mb``, least recently used first out); 0 turns the cache off.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable

ENTRY_BYTES = 200  # an entry's own cost beside its table's buffers (key, tuple, slot)


class SpeedTopCache:
    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[Any, bool, float, int]] = OrderedDict()
        self.bytes = 0

    def hour(self, key: tuple, closed: bool, load: Callable[[], Any]) -> Any:
        """The totals of one hour (``key`` names the table, event type and hour): cached when the
        hour is ``closed``, or open and read less than ``ttl_s`` ago; else ``load()``."""
        if self.max_bytes <= 0:
            return load()
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                totals, was_closed, read_at, _ = entry
                if was_closed or now - read_at < self.ttl_s:
                    self._entries.move_to_end(key)
                    return totals
        totals = load()
        size = totals.nbytes + ENTRY_BYTES
        if size > self.max_bytes:
            return totals
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[3]
            self._entries[key] = (totals, closed, now, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped[3]
        return totals
