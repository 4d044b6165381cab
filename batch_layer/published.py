"""What the published batch state means at one moment (CONTRACTS.md section 2), computed in one
place for the API, the nightly run and the tests: the batch horizon ``H``, the pending days and
the pinned days.

* ``H`` is the end of the latest published day whose version was computed from a closed day,
  never past the end of the latest day closed by time. Entries are never rewritten and every
  entry ever published counts, so neither an event nor a command (a rollback, a forced run of an
  open day) moves ``H`` back.
* A day before ``H`` (and not before ``batch.horizon_start``) is **pending** when the archive's
  index holds raw data for it but it has no published version, or when the index has added raw
  data to it or to one of the ``batch.dedup_span_days`` days before it since its version's input
  was listed. A compaction adds no raw data, so it never makes a day pending.
* A day whose current entry is a rollback is **pinned**: not pending, left alone by the nightly
  run, listed as pinned by answers covering it. A later day's deduplication leaves a pinned day
  out (the pinned version does not count what came after it, so its copies must not make the
  later day drop an event), so a later day whose version left out other days than are pinned
  now is pending.

Nothing here does I/O except through the ``entry`` reader it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from schemas.granularity import DAY_MS, day_name, day_number
from batch_layer.entry import PublicationEntry
from speed_layer.archive_index import IndexState

EntryReader = Callable[[str, int], PublicationEntry]


def latest_closed_day(now_ms: int, lateness_ms: int) -> str:
    """The latest UTC day whose end plus the lateness has passed (closed by time)."""
    return day_name((now_ms - lateness_ms) // DAY_MS - 1)


def closed_by_time(day: str, now_ms: int, lateness_ms: int) -> bool:
    return (day_number(day) + 1) * DAY_MS + lateness_ms <= now_ms


def entry_closed(entry: PublicationEntry, lateness_ms: int) -> bool:
    """Whether the entry's version was computed from a closed day (entries from before the flag
    existed: when it was computed after the day's end plus the lateness)."""
    if entry.closed is not None:
        return entry.closed
    return closed_by_time(entry.day, entry.computed_at_ms or 0, lateness_ms)


def input_window(day: str, span: int) -> list[str]:
    """The days a day's version depends on: the S days before it, then itself."""
    n = day_number(day)
    return [day_name(n - k) for k in range(span, -1, -1)]


def covers(entry: PublicationEntry, day: str, index: IndexState, span: int) -> bool:
    """Whether ``entry``'s input listing covers everything the index holds for its day and the
    days its deduplication looked at (not those it left out as pinned)."""
    seen = entry.input.seen
    if seen is None:  # an entry from before the index: compare raw rows
        summary = index.days.get(day)
        return summary is None or summary.rows <= entry.input.raw_rows
    for d in input_window(day, span):
        if d in entry.input.pinned_span_days:
            continue
        summary = index.days.get(d)
        if summary is not None and summary.rows and summary.last_seq > seen.get(d, 0):
            return False
    return True


@dataclass
class BatchState:
    """One snapshot: the publication log's listing (``published``: day -> seq of its newest
    entry), the archive's index and the clock. Days are asked about lazily and remembered."""

    published: dict[str, int]
    index: IndexState
    entry: EntryReader
    now_ms: int
    lateness_ms: int
    span: int
    horizon_start: str = ""
    horizon_ms: int | None = field(init=False)
    _status: dict[str, tuple[bool, bool]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.horizon_ms = self._horizon()

    def _horizon(self) -> int | None:
        cap = day_number(latest_closed_day(self.now_ms, self.lateness_ms))
        for day in sorted(self.published, reverse=True):
            n = day_number(day)
            if n > cap:
                continue
            for seq in range(self.published[day], 0, -1):
                if entry_closed(self.entry(day, seq), self.lateness_ms):
                    return (n + 1) * DAY_MS
        return None

    def current(self, day: str) -> PublicationEntry | None:
        seq = self.published.get(day)
        return self.entry(day, seq) if seq else None

    def _day(self, day: str) -> tuple[bool, bool]:
        """(pending, pinned) of a day before the horizon."""
        known = self._status.get(day)
        if known is not None:
            return known
        cur = self.current(day)
        if cur is not None and cur.pinned:
            result = (False, True)
        elif self.horizon_start and day < self.horizon_start:
            result = (False, False)
        elif cur is None:
            summary = self.index.days.get(day)
            result = (bool(summary and summary.rows), False)
        else:
            result = (not self._covers(cur, day), False)
        self._status[day] = result
        return result

    def _covers(self, entry: PublicationEntry, day: str) -> bool:
        """Covers its input, and the days its deduplication left out as pinned are exactly the
        pinned ones of its span now."""
        left_out = entry.input.pinned_span_days
        pinned_now = {d for d in input_window(day, self.span)[:-1] if self.pinned(d)}
        return left_out == pinned_now and covers(entry, day, self.index, self.span)

    def pending(self, day: str) -> bool:
        return self.before_horizon(day) and self._day(day)[0]

    def pinned(self, day: str) -> bool:
        cur = self.current(day)
        return cur is not None and cur.pinned

    def before_horizon(self, day: str) -> bool:
        return self.horizon_ms is not None and (day_number(day) + 1) * DAY_MS <= self.horizon_ms

    def days_in(self, lo_ms: int, hi_ms: int) -> list[str]:
        if hi_ms <= lo_ms:
            return []
        return [day_name(n) for n in range(lo_ms // DAY_MS, (hi_ms - 1) // DAY_MS + 1)]

    def pending_days(self, lo_ms: int, hi_ms: int) -> list[str]:
        """The pending days that intersect ``[lo_ms, hi_ms)``, ascending."""
        if self.horizon_ms is None:
            return []
        return [d for d in self.days_in(lo_ms, min(hi_ms, self.horizon_ms)) if self._day(d)[0]]

    def pinned_days(self, lo_ms: int, hi_ms: int) -> list[str]:
        """The pinned days that intersect ``[lo_ms, hi_ms)``, ascending."""
        days = self.days_in(lo_ms, hi_ms)
        return [d for d in days if d in self.published and self.pinned(d)]

    def needs_run(self, day: str) -> bool:
        """Whether the nightly run should compute the day (closed by time assumed): it has raw
        data or is yesterday, and no version, or a version that does not cover its input."""
        cur = self.current(day)
        if cur is not None and cur.pinned:
            return False
        if cur is None:
            return True
        return not self._covers(cur, day)
