"""A publication entry (one immutable JSON document of the publication log) as a typed record,
parsed once where it is read: by the batch state, the nightly run, the audit and the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from schemas.event import parse_rfc3339_ms


@dataclass(frozen=True)
class InputListing:
    """What a version was computed from: when its input was listed, the raw rows it read, the
    archive index's position per day of its window (None: an entry from before the index), and
    the days its deduplication left out as pinned."""

    listed_at: str | None = None
    raw_rows: int = 0
    seen: Mapping[str, int] | None = None
    pinned_span_days: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PublicationEntry:
    day: str
    seq: int
    version: str
    action: str
    computed_at: str | None
    computed_at_ms: int | None
    # Computed from a closed day (None: an entry from before the flag existed).
    closed: bool | None
    # A rollback: the nightly run leaves the day alone until a forced run or a reprocess.
    pinned: bool
    code_version: str | None
    input: InputListing
    # Granularity -> (rows, the view's files under the lake's root).
    views: Mapping[str, tuple[int, tuple[str, ...]]]
    events: int
    watch_ms: int
    record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, record: Mapping[str, Any]) -> PublicationEntry:
        inp = record.get("input") or {}
        seen = inp.get("seen")
        totals = record.get("totals") or {}
        computed = record.get("computed_at")
        return cls(
            day=str(record["day"]), seq=int(record.get("seq") or 0),
            version=str(record.get("version") or ""), action=str(record.get("action") or ""),
            computed_at=computed, computed_at_ms=parse_rfc3339_ms(str(computed)) if computed else None,
            closed=bool(record["closed"]) if "closed" in record else None,
            pinned=bool(record.get("pinned")), code_version=record.get("code_version"),
            input=InputListing(inp.get("listed_at"), int(inp.get("raw_rows", 0) or 0),
                               {d: int(s) for d, s in seen.items()} if seen is not None else None,
                               frozenset(inp.get("pinned_span_days") or ())),
            views={g: (int(v.get("rows", 0)), tuple(v.get("files") or ()))
                   for g, v in (record.get("views") or {}).items()},
            events=int(totals.get("events", 0)), watch_ms=int(totals.get("watch_ms", 0)),
            record=dict(record))

    @classmethod
    def of(cls, entry: PublicationEntry | Mapping[str, Any]) -> PublicationEntry:
        return entry if isinstance(entry, PublicationEntry) else cls.parse(entry)

    def files(self, granularity: str) -> tuple[str, ...]:
        return self.views.get(granularity, (0, ()))[1]
