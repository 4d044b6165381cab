"""What the serving caches' entries weigh in memory, in bytes, so that their budgets hold.

Estimates from the objects themselves (``sys.getsizeof`` of keys and their parts, numpy buffers
with their headers), checked against ``tracemalloc`` by tests/unit/test_serving_sizes.py;
they err on the high side (interned strings and small ints are counted as if owned)."""

from __future__ import annotations

import sys
from typing import Any, Iterable

ARRAY_HEADER = 112  # a numpy array object beside its buffer
OBJECT = 160  # a small Python object with its attribute dict (a dataclass instance)
# An OrderedDict slot with the entry tuple a cache keeps beside the key and value (measured).
ENTRY = 180


def key_bytes(key: Any) -> int:
    """A key made of tuples, strings, bytes and numbers."""
    if isinstance(key, tuple):
        return sys.getsizeof(key) + sum(key_bytes(k) for k in key)
    return sys.getsizeof(key)


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
