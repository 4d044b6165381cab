"""The speed layer's read interface: what the serving layer and the audit read of it — minute
counts, hour totals, the per-day counters and the progress record — as typed records.

``speed_layer.open_speed_views`` gives the one implementation (HBase, speed_layer/store.py);
readers know only :class:`SpeedViews`, so tests and tools can stand in any object with these
methods.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

from schemas.event import format_ms, parse_rfc3339_ms

@dataclass(frozen=True)
class MinuteCount:
    video_id: str
    event_type: str
    minute_ms: int
    count: int
    watch_ms: int


def _ms(value: Any) -> int | None:
    return parse_rfc3339_ms(str(value)) if value else None


@dataclass(frozen=True)
class Progress:
    """The speed layer's progress record (written after each speed micro-batch), parsed once:
    times as epoch ms, counters as ints; ``record`` is the stored form (JSON)."""

    batch_id: int | None
    max_event_time_ms: int | None
    watermark_ms: int | None
    updated_at_ms: int | None
    dropped_late: int | None
    late_unattributed: int
    record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, record: Mapping[str, Any] | None) -> Progress | None:
        if record is None:
            return None
        batch = record.get("batch_id")
        dropped = record.get("dropped_late")
        return cls(batch_id=int(batch) if batch is not None else None,
                   max_event_time_ms=_ms(record.get("max_event_time")),
                   watermark_ms=_ms(record.get("watermark")),
                   updated_at_ms=_ms(record.get("updated_at")),
                   dropped_late=int(dropped) if dropped is not None else None,
                   late_unattributed=int(record.get("late_unattributed") or 0),
                   record=dict(record))

    @functools.cached_property
    def times(self) -> dict[str, str | None]:
        """The record's times as RFC 3339 UTC with milliseconds (what the API answers)."""
        return {"speed_max_event_time": _iso(self.max_event_time_ms),
                "speed_watermark": _iso(self.watermark_ms),
                "speed_updated_at": _iso(self.updated_at_ms)}


def _iso(ms: int | None) -> str | None:
    return format_ms(ms) if ms is not None else None


@dataclass(frozen=True)
class DayCounters:
    """Per UTC day of event time: events the speed layer dropped as later than its watermark,
    and events it left out as stamped ahead of the receiving clock."""

    dropped_late: int = 0
    ahead_of_clock: int = 0


@runtime_checkable
class SpeedViews(Protocol):
    """What the speed layer offers its readers. Times are epoch ms, ranges half-open."""

    def read_minutes(self, video_id: str, event_type: str, from_ms: int,
                     to_ms: int) -> list[MinuteCount]:
        """One (video, event type)'s minutes in ``[from_ms, to_ms)``."""
        ...

    def scan_type_minutes(self, event_type: str, from_ms: int, to_ms: int) -> list[MinuteCount]:
        """Every video's minutes of one event type in the hours ``[from_ms, to_ms)`` (one
        contiguous scan)."""
        ...

    def hour_totals(self, event_type: str, from_ms: int,
                    to_ms: int) -> tuple[list[int], list[str], list[int], list[int]]:
        """Every video's totals per UTC hour over the hours ``[from_ms, to_ms)``, as columns:
        hour start, video id, count, watch_ms (one contiguous scan)."""
        ...

    def hour_minutes(self, event_type: str, hour_ms: int) -> tuple[list[str], list[int],
                                                                    list[int], list[int]]:
        """Every video's minutes of one event type in one UTC hour, as columns: video id,
        minute of the hour, count, watch_ms (one contiguous scan)."""
        ...

    def progress(self) -> Progress | None:
        """The latest progress record (None before the first micro-batch)."""
        ...

    def day_counters(self, day: str) -> DayCounters:
        ...

    def check(self) -> str:
        """What a readiness probe says of the speed views (raises when they are not usable)."""
        ...
