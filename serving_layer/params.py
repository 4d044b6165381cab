"""Request parameters of the REST API: parsed and checked once, every failure naming the
parameter (``400 {"error": "<param>: <rule>"}``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from schemas.granularity import DAY_MS, GRANULARITY_MS
from schemas.config import TallyConfig
from schemas.errors import ParamError
from schemas.event import MIN_TS_MS, parse_rfc3339_ms

__all__ = ["ParamError", "parse_counts", "parse_top", "parse_time"]

# 9999-12-31T00:00:00Z: a range ending there, ceiled to any bucket, still ends at an instant
# RFC 3339 can write (the last day of year 9999 is not served).
MAX_TS_MS = 253_402_214_400_000
VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_K = 1000


def parse_time(text: str | None, param: str) -> int:
    """Epoch milliseconds from RFC 3339 with an offset or integer epoch milliseconds."""
    if text is None or text == "":
        raise ParamError(param, "required (RFC 3339 with an offset, or epoch milliseconds)")
    if re.fullmatch(r"[0-9]{1,16}", text):
        ms = int(text)
    else:
        ms = parse_rfc3339_ms(text)
        if ms is None:
            raise ParamError(param, "must be an RFC 3339 date-time with an offset "
                                    "(2026-11-27T10:15:00Z) or integer epoch milliseconds")
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise ParamError(param, "must be between 2000-01-01T00:00:00Z and 9999-12-31T00:00:00Z")
    return ms


def floor_to(ms: int, size: int) -> int:
    return ms // size * size


def ceil_to(ms: int, size: int) -> int:
    return -(-ms // size) * size


def parse_video_id(video_id: str) -> str:
    if not VIDEO_ID.fullmatch(video_id or ""):
        raise ParamError("video_id", "must be 1-64 characters of [A-Za-z0-9_-]")
    return video_id


def parse_event_type(args: Mapping[str, str], cfg: TallyConfig) -> str:
    t = args.get("event_type", "view")  # absent: the default; present and empty: a 400
    if t not in cfg.events.types:
        raise ParamError("event_type", f"must be one of {', '.join(cfg.events.types)}")
    return t


def parse_granularity(args: Mapping[str, str]) -> str:
    g = args.get("granularity", "hour")
    if g not in GRANULARITY_MS:
        raise ParamError("granularity", "must be one of minute, hour, day")
    return g


def parse_range(args: Mapping[str, str], size: int, max_days: int) -> tuple[int, int]:
    """``from`` floored and ``to`` ceiled to ``size`` ms; the range non-empty and bounded."""
    start, end = parse_time(args.get("from"), "from"), parse_time(args.get("to"), "to")
    if start >= end:
        raise ParamError("to", "must be after from")
    start, end = floor_to(start, size), ceil_to(end, size)
    if end - start > max_days * DAY_MS:
        raise ParamError("to", f"the range must span at most {max_days} days at this granularity")
    return start, end


@dataclass(frozen=True)
class CountsQuery:
    video_id: str
    event_type: str
    granularity: str
    from_ms: int
    to_ms: int

    @property
    def size(self) -> int:
        return GRANULARITY_MS[self.granularity]


def parse_counts(video_id: str, args: Mapping[str, str], cfg: TallyConfig) -> CountsQuery:
    vid = parse_video_id(video_id)
    t = parse_event_type(args, cfg)
    g = parse_granularity(args)
    max_days = cfg.serve.max_range_days_minute if g == "minute" else cfg.serve.max_range_days
    start, end = parse_range(args, GRANULARITY_MS[g], max_days)
    return CountsQuery(vid, t, g, start, end)


@dataclass(frozen=True)
class TopQuery:
    event_type: str
    from_ms: int
    to_ms: int
    k: int


def parse_top(args: Mapping[str, str], cfg: TallyConfig) -> TopQuery:
    """Top-K ranges are floored/ceiled to the minute, the finest bucket either layer keeps."""
    t = parse_event_type(args, cfg)
    raw_k = args.get("k", "10")
    if not re.fullmatch(r"[0-9]{1,7}", raw_k) or not 1 <= int(raw_k) <= MAX_K:
        raise ParamError("k", f"must be an integer between 1 and {MAX_K}")
    start, end = parse_range(args, GRANULARITY_MS["minute"], cfg.serve.max_range_days)
    return TopQuery(t, start, end, int(raw_k))
