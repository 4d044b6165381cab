"""Durations as the config and the command line write them ('10 minutes', '2s', '30 days'),
read once here for every user."""

from __future__ import annotations

import re

from schemas.errors import ConfigError

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*")
_UNITS = {"ms": 1, "millisecond": 1, "milliseconds": 1, "s": 1000, "sec": 1000, "second": 1000,
          "seconds": 1000, "m": 60_000, "min": 60_000, "minute": 60_000, "minutes": 60_000,
          "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
          "d": 86_400_000, "day": 86_400_000, "days": 86_400_000}


def parse_duration_ms(text: str, what: str = "duration") -> int:
    """'10 minutes', '30 seconds', '2s', '500 ms', '30d' -> milliseconds."""
    m = _DURATION.fullmatch(str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise ConfigError(f"{what}: cannot read {text!r} as a duration (try '10 minutes' or '2s')")
    return int(float(m.group(1)) * _UNITS[m.group(2)])
