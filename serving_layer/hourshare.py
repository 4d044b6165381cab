"""Top-K's open-hour totals shared by the worker processes of one host, through files.

Every worker keeps the totals of the hour still open for ``serve.top_ttl_s`` (speedcache.py);
without sharing, W workers each scan every active video's row of that hour every ``top_ttl_s``
— W times the HBase work, on the same cores that answer the requests. Here the first worker to
find the shared copy older than ``top_ttl_s`` takes a file lock, scans HBase once and writes the
totals as an Arrow IPC file (replaced atomically); the others wait for the lock and read that
file instead of scanning. A reader is told how old the copy is, so a worker never holds it for
longer than ``top_ttl_s`` after the scan. Any failure to use the files (a read-only state
directory, say) falls back to reading HBase directly.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Callable

from tally import log

LOG = log.get("serve.share")
KEEP_S = 86_400  # files older than this (hours long closed) are removed by a writer
SWEEP_EVERY_S = 600


class SharedHours:
    def __init__(self, directory: Path, ttl_s: float) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self._swept = 0.0

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.arrow"

    def _fresh(self, path: Path) -> float | None:
        """The copy's age in seconds when younger than the TTL, else None."""
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        return age if -1.0 < age < self.ttl_s else None

    def load(self, name: str, read: Callable[[], dict[str, tuple[int, int]]]):
        """(Arrow table video_id/count/watch_ms, its age in seconds) for ``name`` (which names
        the HBase endpoint, table, event type and hour): the shared copy when it is younger
        than the TTL, else ``read()`` (one HBase scan), written for the other workers."""
        try:
            return self._load(name, read)
        except OSError as exc:
            LOG.warning("shared hour totals unusable (%s: %s): reading HBase directly",
                        type(exc).__name__, exc)
            return _table(read()), 0.0

    def _load(self, name: str, read):
        import pyarrow as pa
        import pyarrow.ipc as ipc

        path = self._path(name)
        age = self._fresh(path)
        if age is not None:
            return ipc.open_file(pa.memory_map(str(path))).read_all(), age
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # while another worker scans, wait for its copy
            age = self._fresh(path)
            if age is not None:
                return ipc.open_file(pa.memory_map(str(path))).read_all(), age
            table = _table(read())
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with ipc.new_file(str(tmp), table.schema) as w:
                w.write_table(table)
            os.replace(tmp, path)
        self._sweep()
        return table, 0.0

    def _sweep(self) -> None:
        if time.time() - self._swept < SWEEP_EVERY_S:
            return
        self._swept = time.time()
        cutoff = self._swept - KEEP_S
        for p in self.directory.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass


def _table(sums: dict[str, tuple[int, int]]):
    import pyarrow as pa

    from serving_layer.batch import per_video_schema

    values = list(sums.values())
    return pa.table({"video_id": list(sums), "count": [c for c, _ in values],
                     "watch_ms": [w for _, w in values]}, schema=per_video_schema())
