"""Top-K arithmetic over per-video sums held as numpy arrays, one worker's video ids interned.

A worker numbers every video id it meets once (:class:`VideoIndex`); a part of a top-K query (a
batch view's per-video sums over some buckets, one speed hour's totals, the minute ends of a range)
is then a :class:`Sparse` — the numbers of the videos it has and their count and watch_ms — and
parts add up into dense arrays indexed by those numbers. Adding a part to a cached sum and picking
the k largest are then a few numpy operations over ~10,000 slots instead of an Arrow group-by over
every part on every request.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from serving_layer.sizes import OBJECT, array_bytes


class VideoIndex:
    """Video id <-> a dense number, growing only (the ids a worker ever saw; ~100 bytes each)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def numbers(self, video_ids: Iterable[str]) -> np.ndarray:
        pos = self._pos
        with self._lock:
            out = []
            for v in video_ids:
                i = pos.get(v)
                if i is None:
                    i = pos[v] = len(self.ids)
                    self.ids.append(v)
                out.append(i)
        return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class Sparse:
    """Per-video sums of one part: video numbers (each once), counts, watch_ms."""

    idx: np.ndarray
    count: np.ndarray
    watch_ms: np.ndarray
    age_s: float = 0.0  # how old the read it came from was when it was made (hourshare.py)

    @property
    def nbytes(self) -> int:
        return OBJECT + array_bytes(self.idx, self.count, self.watch_ms)

    @classmethod
    def of(cls, index: VideoIndex, video_ids: Iterable[str], counts: Iterable[int],
           watch_ms: Iterable[int]) -> Sparse:
        return cls(index.numbers(video_ids), np.fromiter(counts, np.int64),
                   np.fromiter(watch_ms, np.int64))

    @classmethod
    def of_dict(cls, index: VideoIndex, sums: dict[str, tuple[int, int]]) -> Sparse:
        values = sums.values()
        return cls.of(index, sums.keys(), (c for c, _ in values), (w for _, w in values))

    @classmethod
    def of_table(cls, index: VideoIndex, table, age_s: float = 0.0) -> Sparse:
        """From an Arrow table with columns video_id, count, watch_ms (one row per video)."""
        return cls(index.numbers(table["video_id"].to_pylist()),
                   table["count"].to_numpy().astype(np.int64),
                   table["watch_ms"].to_numpy().astype(np.int64), age_s)


@dataclass(frozen=True)
class Dense:
    """Per-video sums indexed by video number (slots past the end are 0)."""

    count: np.ndarray
    watch_ms: np.ndarray

    @property
    def nbytes(self) -> int:
        return OBJECT + array_bytes(self.count, self.watch_ms)


def add_up(index: VideoIndex, base: Dense | None, parts: Iterable[Sparse]) -> Dense:
    """``base`` plus every part, over every number of ``index`` (parts made from it)."""
    parts = list(parts)
    n = len(index)  # after the parts: they may have numbered new videos
    count = np.zeros(n, np.int64)
    watch = np.zeros(n, np.int64)
    if base is not None:
        count[:len(base.count)] += base.count
        watch[:len(base.watch_ms)] += base.watch_ms
    for p in parts:
        if len(p.idx):  # a part names each video once: plain fancy-index addition is exact
            count[p.idx] += p.count
            watch[p.idx] += p.watch_ms
    return Dense(count, watch)


def top_k(index: VideoIndex, sums: Dense, k: int) -> list[tuple[str, int, int]]:
    """The ``k`` videos with the highest count (ties by video id, ascending; videos summing to 0
    left out), as (video, count, watch_ms)."""
    count = sums.count
    pos = np.flatnonzero(count > 0)
    if len(pos) > k:
        values = count[pos]
        kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest count
        above = pos[values > kth]
        tied = pos[values == kth]
        ids = index.ids
        # Of the videos tied at the k-th count, the ones with the smallest ids make the cut.
        pos = np.concatenate([above, np.array(heapq.nsmallest(k - len(above), tied.tolist(),
                                                              key=ids.__getitem__), np.int64)])
    ids = index.ids
    ranked = sorted(pos.tolist(), key=lambda i: (-int(count[i]), ids[i]))
    return [(ids[i], int(count[i]), int(sums.watch_ms[i])) for i in ranked]
