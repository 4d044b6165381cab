"""The ``buckets`` list of a counts answer, written as JSON from numpy columns in one step.

A 24-hour minute query answers 1,440 buckets. Building a dict per bucket and encoding them costs
more than everything else the query does; here a bucket list is a cached byte template per
layout (range, bucket size, where the speed part starts, which buckets are flagged) with a
``%d`` per number, filled by one ``bytes % tuple`` (C) from the count and watch_ms columns.
:class:`Buckets` is what a counts body holds: the app's JSON provider writes it through
:meth:`Buckets.fragment`; Python code may iterate it as the dicts the JSON holds.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import orjson

from schemas.event import format_ms
from schemas.granularity import DAY_MS
from serving_layer.cache import ByteCache



def bucket_starts(lo: int, hi: int, size: int) -> tuple[str, ...]:
    """``format_ms`` of every bucket start in ``[lo, hi)``, without a datetime per bucket (only
    when a layout's template is built: the templates are what is kept)."""
    out = []
    days: dict[int, str] = {}
    for b in range(lo, hi, size):
        d, rem = divmod(b, DAY_MS)
        prefix = days.get(d)
        if prefix is None:
            prefix = days[d] = format_ms(d * DAY_MS)[:11]
        s, ms = divmod(rem, 1000)
        m, s = divmod(s, 60)
        h, m = divmod(m, 60)
        out.append(f"{prefix}{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z")
    return tuple(out)


def _bucket(start: str, source: str, counted: bool, beyond: bool) -> str:
    numbers = '"count":%d,"watch_ms":%d' if counted else '"count":null,"watch_ms":null'
    extra = ',"unavailable":true' if not counted else ""
    extra += ',"beyond_retention":true' if beyond else ""
    return f'{{"start":"{start}",{numbers},"source":"{source}"{extra}}}'


# A template holds ~80 bytes per bucket: a worker keeps up to 32 MB of them (a 7-day range of
# minutes takes ~800 KB), least recently used out first.
TEMPLATES = ByteCache(32 << 20)


def _template(lo: int, hi: int, size: int, runs: tuple, unavailable: bool) -> bytes:
    key = (lo, hi, size, runs, unavailable)
    kept = TEMPLATES.get(key)
    if kept is not None:
        return kept
    starts = bucket_starts(lo, hi, size)
    parts = []
    for first, end, source, beyond in runs:
        counted = not (source == "speed" and unavailable)
        parts.extend(_bucket(starts[i], source, counted, beyond) for i in range(first, end))
    out = ("[" + ",".join(parts) + "]").encode()
    TEMPLATES.put(key, out, sys.getsizeof(out))
    return out


class Buckets(Sequence):
    """Every bucket of ``[lo, hi)``, laid out by the plan's ``runs`` (first index, end index,
    source, beyond retention): ``count``/``watch_ms`` null and ``unavailable`` on the speed
    buckets when the speed views could not be read."""

    def __init__(self, lo: int, hi: int, size: int, count, watch, runs: tuple,
                 unavailable: bool) -> None:
        self.lo, self.hi, self.size = lo, hi, size
        self.count, self.watch = count, watch
        self.runs, self.unavailable = runs, unavailable
        self._parsed: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.count)

    def _numbers(self):
        import numpy as np

        if self.unavailable:
            keep = np.ones(len(self.count), bool)
            for first, end, source, _beyond in self.runs:
                if source == "speed":
                    keep[first:end] = False
            count, watch = self.count[keep], self.watch[keep]
        else:
            count, watch = self.count, self.watch
        pairs = np.empty(2 * len(count), np.int64)
        pairs[0::2], pairs[1::2] = count, watch
        return tuple(pairs.tolist())

    def json(self) -> bytes:
        return _template(self.lo, self.hi, self.size, self.runs, self.unavailable) % self._numbers()

    def fragment(self) -> orjson.Fragment:
        return orjson.Fragment(self.json())

    def _dicts(self) -> list[dict[str, Any]]:
        if self._parsed is None:  # Python readers (tests, tools) only: the app writes json()
            self._parsed = orjson.loads(self.json())
        return self._parsed

    def __getitem__(self, i):  # type: ignore[override]
        return self._dicts()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._dicts())
