"""The merge rule (CONTRACTS.md section 2) as plain arithmetic: which layer answers each bucket
of a query, given the batch horizon ``H`` and the pending days before it. The counts and top-K
answers are built from this plan and nothing else.

* Buckets that start before ``H`` come from the batch views — except on a **pending** day
  (raw data its published version does not cover, or no version at all): from its published
  version if it has one, else from the speed views where they still hold it (the speed views'
  retention, counted from write time), else zero with source ``none``.
* Buckets at or after ``H`` come from the speed views; those that start before the retention
  floor are flagged ``beyond_retention``.

``H`` and the pending days are whole UTC days, so they are bucket boundaries at every
granularity: no bucket is split, counted twice or skipped. No I/O here. The answers are laid
out from :meth:`Plan.runs` (serving_layer/buckets.py) and read the views along
:attr:`Plan.segments`: nothing else decides which layer answers a bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from schemas.granularity import DAY_MS, day_name


@dataclass(frozen=True)
class Part:
    """A half-open interval ``[lo, hi)``."""

    lo: int
    hi: int

    def __bool__(self) -> bool:
        return self.hi > self.lo


@dataclass(frozen=True)
class Segment:
    """Buckets ``[lo, hi)`` answered one way: ``source`` batch (from the published version of
    ``day``), speed (``beyond``: before the speed views' retention floor) or none (zero)."""

    lo: int
    hi: int
    source: str
    day: str | None = None
    beyond: bool = False


@dataclass(frozen=True)
class Plan:
    from_ms: int
    to_ms: int
    size: int
    horizon_ms: int | None
    segments: tuple[Segment, ...]
    # Speed buckets starting before this instant may have expired from HBase (TTL from write time).
    retention_floor_ms: int
    pending_days: tuple[str, ...] = ()

    def parts(self, source: str) -> list[Part]:
        """The contiguous stretches answered by ``source``."""
        out: list[Part] = []
        for s in self.segments:
            if s.source != source:
                continue
            if out and out[-1].hi == s.lo:
                out[-1] = Part(out[-1].lo, s.hi)
            else:
                out.append(Part(s.lo, s.hi))
        return out

    def runs(self) -> tuple[tuple[int, int, str, bool], ...]:
        """The segments as bucket index runs (first, end, source, beyond): the layout of the
        answer's bucket list."""
        return tuple(((s.lo - self.from_ms) // self.size, (s.hi - self.from_ms) // self.size,
                      s.source, s.beyond) for s in self.segments)


def _ceil(ms: int, size: int) -> int:
    return -(-ms // size) * size


def plan(from_ms: int, to_ms: int, size: int, horizon_ms: int | None, now_ms: int,
         speed_ttl_days: int, pending: Mapping[str, bool] | None = None) -> Plan:
    """``from_ms``/``to_ms`` are already aligned to ``size``; ``horizon_ms`` None: nothing
    published from a closed day, everything from the speed views. ``pending``: the pending days
    of the range before the horizon, each mapped to whether it has a published version."""
    if from_ms % size or to_ms % size or from_ms >= to_ms:
        raise ValueError("from/to must be aligned to the bucket size and from < to")
    if horizon_ms is not None and horizon_ms % DAY_MS:
        raise ValueError("the batch horizon is the end of a UTC day")
    pending = pending or {}
    floor = now_ms - speed_ttl_days * DAY_MS
    split = _ceil(floor, size)  # the first bucket that starts at or after the floor
    h = from_ms if horizon_ms is None else min(max(horizon_ms, from_ms), to_ms)
    segments: list[Segment] = []

    def speed(lo: int, hi: int, before_floor: str) -> None:
        """Speed buckets of ``[lo, hi)``; those before the floor as ``before_floor``."""
        cut = min(max(split, lo), hi)
        if cut > lo:
            segments.append(Segment(lo, cut, before_floor, beyond=before_floor == "speed"))
        if hi > cut:
            segments.append(Segment(cut, hi, "speed"))

    for day, lo, hi, _whole in day_pieces(Part(from_ms, h)):
        if day in pending and not pending[day]:
            speed(lo, hi, "none")
        else:
            segments.append(Segment(lo, hi, "batch", day))
    if h < to_ms:
        speed(h, to_ms, "speed")
    merged: list[Segment] = []
    for s in segments:  # adjacent speed or none stretches of the same kind are one segment
        prev = merged[-1] if merged else None
        if (prev and s.source != "batch" and prev.source == s.source and prev.beyond == s.beyond
                and prev.hi == s.lo):
            merged[-1] = Segment(prev.lo, s.hi, s.source, None, s.beyond)
        else:
            merged.append(s)
    days = tuple(sorted(d for d in pending if d in days_of(Part(from_ms, h))))
    return Plan(from_ms, to_ms, size, horizon_ms, tuple(merged), floor, days)


def days_of(part: Part) -> list[str]:
    """The UTC days an interval touches."""
    if not part:
        return []
    first, last = part.lo // DAY_MS, (part.hi - 1) // DAY_MS
    return [day_name(d) for d in range(first, last + 1)]


def day_pieces(part: Part) -> list[tuple[str, int, int, bool]]:
    """``part`` cut at day boundaries: (day, lo, hi, whole day?)."""
    out = []
    for d in range(part.lo // DAY_MS, (part.hi - 1) // DAY_MS + 1 if part else 0):
        lo, hi = max(part.lo, d * DAY_MS), min(part.hi, (d + 1) * DAY_MS)
        out.append((day_name(d), lo, hi, lo == d * DAY_MS and hi == (d + 1) * DAY_MS))
    return out
