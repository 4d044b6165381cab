"""The merge rule (CONTRACTS.md section 2) as plain arithmetic: which buckets of a query are
answered by the batch views and which by the speed views, given the batch horizon ``H``.

Buckets that start before ``H`` come from the batch views, buckets at or after ``H`` from the
speed views. ``H`` is the end of a UTC day, so it is a bucket boundary at every granularity and
no bucket is split, counted twice or skipped. No I/O here: the unit tests check it alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from serving_layer.params import DAY_MS


@dataclass(frozen=True)
class Part:
    """A half-open interval ``[lo, hi)`` answered by one layer."""

    lo: int
    hi: int

    def __bool__(self) -> bool:
        return self.hi > self.lo


@dataclass(frozen=True)
class Plan:
    from_ms: int
    to_ms: int
    size: int
    horizon_ms: int | None
    batch: Part
    speed: Part
    # Speed buckets starting before this instant may have expired from HBase (TTL from write time).
    retention_floor_ms: int

    def buckets(self) -> list[int]:
        return list(range(self.from_ms, self.to_ms, self.size))

    def source(self, bucket_ms: int) -> str:
        return "batch" if self.horizon_ms is not None and bucket_ms < self.horizon_ms else "speed"

    def beyond_retention(self, bucket_ms: int) -> bool:
        return self.source(bucket_ms) == "speed" and bucket_ms < self.retention_floor_ms

    def batch_days(self) -> list[str]:
        return days_of(self.batch)


def plan(from_ms: int, to_ms: int, size: int, horizon_ms: int | None, now_ms: int,
         speed_ttl_days: int) -> Plan:
    """``from_ms``/``to_ms`` are already aligned to ``size``; ``horizon_ms`` None: no batch
    horizon (nothing published and no horizon start), everything from the speed views."""
    if from_ms % size or to_ms % size or from_ms >= to_ms:
        raise ValueError("from/to must be aligned to the bucket size and from < to")
    if horizon_ms is not None and horizon_ms % DAY_MS:
        raise ValueError("the batch horizon is the end of a UTC day")
    h = from_ms if horizon_ms is None else min(max(horizon_ms, from_ms), to_ms)
    return Plan(from_ms, to_ms, size, horizon_ms, Part(from_ms, h), Part(h, to_ms),
                now_ms - speed_ttl_days * DAY_MS)


def day_of(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // 1000, dt.timezone.utc).date().isoformat()


def days_of(part: Part) -> list[str]:
    """The UTC days an interval touches."""
    if not part:
        return []
    first, last = part.lo // DAY_MS, (part.hi - 1) // DAY_MS
    return [day_of(d * DAY_MS) for d in range(first, last + 1)]


def day_pieces(part: Part) -> list[tuple[str, int, int, bool]]:
    """``part`` cut at day boundaries: (day, lo, hi, whole day?)."""
    out = []
    for d in range(part.lo // DAY_MS, (part.hi - 1) // DAY_MS + 1 if part else 0):
        lo, hi = max(part.lo, d * DAY_MS), min(part.hi, (d + 1) * DAY_MS)
        out.append((day_of(d * DAY_MS), lo, hi, lo == d * DAY_MS and hi == (d + 1) * DAY_MS))
    return out


def horizon_ms(published: dict[str, int] | set[str], horizon_start: str | None) -> int | None:
    """The batch horizon from one listing of the publication log: the end of the last day D such
    that every day from ``horizon_start`` through D is published (``horizon_start`` itself when
    it is not); None without a ``horizon_start``."""
    if not horizon_start:
        return None
    day = dt.date.fromisoformat(horizon_start)
    while day.isoformat() in published:
        day += dt.timedelta(days=1)
    return int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() * 1000)
