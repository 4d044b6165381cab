"""Top-K over interned video numbers (serving_layer/topk.py) against a plain-Python ranking."""

from __future__ import annotations

import random

import pytest

from serving_layer.topk import Sparse, VideoIndex, add_up, top_k


def brute(parts: list[dict[str, tuple[int, int]]], k: int) -> list[tuple[str, int, int]]:
    sums: dict[str, list[int]] = {}
    for part in parts:
        for v, (c, w) in part.items():
            s = sums.setdefault(v, [0, 0])
            s[0] += c
            s[1] += w
    ranked = sorted(((v, c, w) for v, (c, w) in sums.items() if c > 0), key=lambda t: (-t[1], t[0]))
    return ranked[:k]


@pytest.mark.parametrize("seed", range(40))
def test_top_k_equals_a_plain_ranking_with_many_ties(seed):
    rnd = random.Random(seed)
    index = VideoIndex()
    videos = [f"vid-{rnd.randrange(10**6):06d}" for _ in range(rnd.randrange(1, 300))]
    # Small counts: many videos tie at the k-th place; some sum to 0.
    parts = [{v: (rnd.randrange(0, 4), rnd.randrange(0, 1000)) for v in rnd.sample(videos, rnd.randrange(len(videos) + 1))}
             for _ in range(rnd.randrange(1, 5))]
    k = rnd.choice([1, 3, 10, 50, 1000])
    stable, volatile = parts[: len(parts) // 2], parts[len(parts) // 2:]
    base = add_up(index, None, [Sparse.of_dict(index, p) for p in stable])
    # Videos first seen after the base was summed get numbers past its end.
    got = top_k(index, add_up(index, base, [Sparse.of_dict(index, p) for p in volatile]), k)
    assert got == brute(parts, k)


def test_numbers_are_stable_and_dense():
    index = VideoIndex()
    assert index.numbers(["b", "a", "b"]).tolist() == [0, 1, 0]
    assert index.numbers(["c", "a"]).tolist() == [2, 1]
    assert index.ids == ["b", "a", "c"] and len(index) == 3
    assert top_k(index, add_up(index, None, []), 5) == []
