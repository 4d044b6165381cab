"""Snapshots of an open speed hour, shared by the worker processes of one host through files.

A snapshot is every video's minutes of one (event type, UTC hour) from the speed layer's top-K
table (one contiguous scan), with the speed layer's progress record read just BEFORE that scan:
the snapshot holds at least what that record says was written. Top-K takes every video's total
from it; counts may take a video's minutes from it (``serve.counts_open_shared``). A worker keeps
a snapshot for ``serve.top_ttl_s`` (speedcache.py). Without sharing, W workers would each scan
every active video's row of the hour every ``top_ttl_s`` — W times the HBase work, on the same
cores that answer the requests. Here the first worker to find the shared copy older than
``top_ttl_s`` takes a file lock, scans HBase once and writes the snapshot as an Arrow IPC file
(replaced atomically); the others wait for the lock and read that file instead of scanning. A
reader is told how old the copy is, so a worker never holds it for longer than ``top_ttl_s``
after the scan. Any failure to use the files (a read-only state directory, say) falls back to
reading HBase directly.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from adapters import log
from serving_layer.sizes import OBJECT, array_bytes, str_index_bytes
from serving_layer.topk import Sparse, VideoIndex
from speed_layer.views import Progress

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

    def load(self, name: str, read: Callable[[], tuple[tuple, Progress | None]]):
        """(Arrow table video_id/minute/count/watch_ms with the progress record in its schema
        metadata, its age in seconds) for ``name`` (which names the HBase endpoint, table,
        event type and hour): the shared copy when it is younger than the TTL, else ``read()``
        (the progress record, then one HBase scan), written for the other workers."""
        try:
            return self._load(name, read)
        except OSError as exc:
            LOG.warning("shared hour snapshots unusable (%s: %s): reading HBase directly",
                        type(exc).__name__, exc)
            return snapshot_table(*read()), 0.0

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
            table = snapshot_table(*read())
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


def snapshot_table(columns: tuple, progress: Progress | None):
    """The Arrow form of a snapshot: ``store.hour_minutes``'s columns, the progress record in
    the schema metadata."""
    import pyarrow as pa

    videos, minutes, counts, watches = columns
    return pa.table({"video_id": pa.array(videos, pa.string()), "minute": pa.array(minutes, pa.int8()),
                     "count": pa.array(counts, pa.int64()), "watch_ms": pa.array(watches, pa.int64())},
                    metadata={"progress": json.dumps(progress.record if progress else None)})


class HourSnapshot:
    """One open hour's snapshot, indexed for both queries: ``totals`` per video (a topk.Sparse
    over the worker's video numbers) and ``minutes(video)``; ``progress`` is the speed layer's
    record read before the scan, ``age_s`` how old the scan was when this worker got it."""

    def __init__(self, table, age_s: float, index: VideoIndex) -> None:
        import pyarrow.compute as pc

        meta = table.schema.metadata or {}
        self.progress = Progress.parse(json.loads(meta.get(b"progress", b"null")))
        self.age_s = age_s
        table = table.sort_by("video_id")
        self.minute = table["minute"].to_numpy().astype(np.int64)
        self.count = table["count"].to_numpy()
        self.watch_ms = table["watch_ms"].to_numpy()
        if table.num_rows:
            runs = pc.run_end_encode(table["video_id"].combine_chunks())
            ends = runs.run_ends.to_numpy().astype(np.int64)
            videos = runs.values.to_pylist()
        else:
            ends, videos = np.zeros(0, np.int64), []
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        self._slices = dict(zip(videos, zip(starts.tolist(), ends.tolist())))
        sums = (np.add.reduceat(self.count, starts), np.add.reduceat(self.watch_ms, starts)) \
            if len(videos) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.totals = Sparse(index.numbers(videos), sums[0].astype(np.int64),
                             sums[1].astype(np.int64), age_s)
        # count and watch_ms are views of the table's columns: the columns stay held.
        self.nbytes = (OBJECT + array_bytes(self.minute, self.count, self.watch_ms)
                       + self.totals.nbytes + str_index_bytes(self._slices, 56 + 2 * 32))

    def minutes(self, video_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(minute of the hour, count, watch_ms) of one video."""
        lo, hi = self._slices.get(video_id, (0, 0))
        return self.minute[lo:hi], self.count[lo:hi], self.watch_ms[lo:hi]
