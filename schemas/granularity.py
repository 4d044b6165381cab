"""The bucket sizes of the contract (minute, hour, day; CONTRACTS.md section 2) and UTC days as
both layers and the API name them, defined once."""

from __future__ import annotations

import datetime as dt

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# Granularity name -> bucket size in milliseconds, finest first.
GRANULARITY_MS: dict[str, int] = {"minute": MINUTE_MS, "hour": HOUR_MS, "day": DAY_MS}
GRANULARITIES: tuple[str, ...] = tuple(GRANULARITY_MS)

_EPOCH = dt.date(1970, 1, 1)


def day_number(day: str) -> int:
    """'1970-01-02' -> 1: days since the epoch."""
    return (dt.date.fromisoformat(day) - _EPOCH).days


def day_name(number: int) -> str:
    return (_EPOCH + dt.timedelta(days=number)).isoformat()


def day_of_ms(ms: int) -> str:
    """The UTC day (YYYY-MM-DD) of an instant in epoch milliseconds."""
    return day_name(ms // DAY_MS)


def day_start_ms(day: str) -> int:
    return day_number(day) * DAY_MS
