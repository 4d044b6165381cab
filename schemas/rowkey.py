"""The HBase row-key codec of the speed views, and the layout of Tally's HBase tables.

A speed-view row key is::

    salt (1 byte) | video_id (ASCII) | 0x00 | event_type (ASCII) | 0x00 | minute (4 bytes, BE)

* ``salt = crc32(video_id) mod salt_buckets`` spreads videos over the table's regions (the table
  is pre-split at the salt values, one region per salt) while keeping every row of one video in
  one region;
* ids never contain 0x00 (the contract allows ``[A-Za-z0-9_-]`` and the configured event types),
  so the separator keeps ``abc`` and ``abcd`` apart and a prefix scan exact;
* the minute (minutes since the epoch, unsigned big-endian) sorts rows of one (video, type) by
  time, so a time range of one video is ONE contiguous scan between :func:`scan_range` bounds.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SEP = b"\x00"
_MINUTE = struct.Struct(">I")
MS_PER_MINUTE = 60_000


def salt_of(video_id: str, buckets: int) -> int:
    return zlib.crc32(video_id.encode("ascii")) % buckets


def prefix(video_id: str, event_type: str, buckets: int) -> bytes:
    """The key prefix shared by every minute row of one (video, event type)."""
    return (bytes((salt_of(video_id, buckets),)) + video_id.encode("ascii") + SEP
            + event_type.encode("ascii") + SEP)


def encode(video_id: str, event_type: str, minute_ms: int, buckets: int) -> bytes:
    """Row key of the minute that starts at ``minute_ms`` (floored to the minute)."""
    return prefix(video_id, event_type, buckets) + _MINUTE.pack(minute_ms // MS_PER_MINUTE)


def decode(key: bytes) -> tuple[str, str, int]:
    """(video_id, event_type, minute start in epoch ms) of a row key."""
    body, minute = key[1:-4], key[-4:]
    video, event_type, tail = body.split(SEP)
    if tail:
        raise ValueError(f"not a speed-view row key: {key!r}")
    return video.decode("ascii"), event_type.decode("ascii"), _MINUTE.unpack(minute)[0] * MS_PER_MINUTE


def minute_of(key: bytes) -> int:
    """The minute start (epoch ms) of a row key, without decoding the rest."""
    return _MINUTE.unpack(key[-4:])[0] * MS_PER_MINUTE


def scan_range(video_id: str, event_type: str, from_ms: int, to_ms: int,
               buckets: int) -> tuple[bytes, bytes]:
    """(row_start, row_stop) covering the minutes in ``[from_ms, to_ms)``; stop is exclusive."""
    p = prefix(video_id, event_type, buckets)
    first = from_ms // MS_PER_MINUTE
    last = -(-to_ms // MS_PER_MINUTE)  # ceil: a range ending mid-minute includes that minute
    return p + _MINUTE.pack(first), p + _MINUTE.pack(last)


_HOUR = struct.Struct(">I")
MS_PER_HOUR = 3_600_000


def top_key(event_type: str, hour_ms: int, video_id: str) -> bytes:
    """Row key of the speed layer's top-K support: one row per (event type, UTC hour, video),
    so that one event type's hours are one contiguous scan across all videos."""
    return event_type.encode("ascii") + SEP + _HOUR.pack(hour_ms // MS_PER_HOUR) + video_id.encode("ascii")


def decode_top_key(key: bytes) -> tuple[str, int, str]:
    event_type, rest = key.split(SEP, 1)
    return event_type.decode("ascii"), _HOUR.unpack(rest[:4])[0] * MS_PER_HOUR, rest[4:].decode("ascii")


def top_scan_range(event_type: str, from_ms: int, to_ms: int) -> tuple[bytes, bytes]:
    """(row_start, row_stop) of the hours that start in ``[from_ms, to_ms)`` (hour-aligned)."""
    p = event_type.encode("ascii") + SEP
    return p + _HOUR.pack(from_ms // MS_PER_HOUR), p + _HOUR.pack(-(-to_ms // MS_PER_HOUR))


def minute_qualifiers(minute_ms: int) -> tuple[bytes, bytes]:
    """Columns (count, watch_ms) of a minute inside its hour row of the top-K table."""
    m = bytes(((minute_ms // MS_PER_MINUTE) % 60,))
    return b"h:c" + m, b"h:w" + m


@dataclass(frozen=True)
class TableSpec:
    """An HBase table Tally owns: its column families with their TTL, and its pre-splits."""

    name: str
    families: tuple[tuple[str, int], ...]  # (family, ttl seconds; 0 = forever)
    salted: bool


def tables(cfg) -> list[TableSpec]:
    """The tables `stack up` creates for a config (see README, 'HBase layout')."""
    ttl = cfg.hbase.speed_ttl_days * 86400
    return [
        # Speed views: family m holds count (m:c) and watch_ms (m:w) per minute row.
        TableSpec(cfg.hbase.speed_table, (("m", ttl),), salted=True),
        # Top-K support: per (event type, hour, video) row, one count and one watch_ms column
        # per minute of the hour (absolute values, so a replayed batch rewrites the same cells).
        TableSpec(cfg.hbase.top_table, (("h", ttl),), salted=False),
        # Progress records of the streaming job and other small metadata; kept forever.
        TableSpec(cfg.hbase.meta_table, (("p", 0),), salted=False),
    ]
