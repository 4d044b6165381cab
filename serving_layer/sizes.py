"""What the serving caches' entries weigh in memory, in bytes, so that their budgets hold.

Estimates from the objects themselves (``sys.getsizeof`` of keys and their parts, numpy buffers
with their headers), checked against ``tracemalloc`` by tests/unit/test_serving_sizes.py;
they err on the high side (interned strings and small ints are counted as if owned)."""

from __future__ import annotations

import sys
from typing import Any, Iterable

ARRAY_HEADER = 112  # a numpy array object beside its buffer
OBJECT = 160  # a small Python object with its attribute dict (a dataclass instance)
# What the cache primitive (cache.py) keeps per entry beside its key and value: its slots in
# cachetools' tables, the entry tuple and the size (measured: 230 bytes at 20,000 entries, up to ~250 at a few
# thousand, when the tables have just grown).
ENTRY = 256


def key_bytes(key: Any) -> int:
    """A key made of tuples, strings, bytes and numbers."""
    if isinstance(key, tuple):
        return sys.getsizeof(key) + sum(key_bytes(k) for k in key)
    return sys.getsizeof(key)


def json_bytes(obj: Any) -> int:
    """A parsed JSON document (dicts, lists, strings, numbers), every object counted."""
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(json_bytes(k) + json_bytes(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sys.getsizeof(obj) + sum(json_bytes(v) for v in obj)
    return sys.getsizeof(obj)


def array_bytes(*arrays: Any) -> int:
    """numpy arrays: buffers and headers (a view counts the part of its base it shows)."""
    return sum(ARRAY_HEADER + a.nbytes for a in arrays)


def str_index_bytes(keys: Iterable[Any], value_bytes: int) -> int:
    """A dict from ``keys`` (strings or tuples of them) to small values of ``value_bytes``."""
    n = 0
    total = 0
    for k in keys:
        n += 1
        total += key_bytes(k)
    # A dict slot: hash, key and value pointers, at a load factor of about 2/3 (plus indices).
    return total + n * (value_bytes + 40) + 64
