"""The serving layer's view of the published batch state, held per worker process.

* A :class:`Snapshot` is ONE listing of the publication log (``views/_log/``) — every published
  day with the position (seq) of its newest entry — and ONE state of the archive's per-day
  index, with what they mean (:class:`batch_layer.published.BatchState`: the horizon, pending
  and pinned days). A request takes one snapshot and uses only it, so a day published
  mid-request cannot mix two states. A worker reuses a snapshot for ``serve.catalog_ttl_s``
  seconds and no longer: neither a publication nor its absence is kept for longer.
* Publication entries are immutable (create-if-absent, never rewritten): cached by (day, seq).
* Views are cached per (day, version, granularity) as an :class:`IndexedView`: the view's rows
  sorted by (video, event type, bucket) with a dict from (video, event type) to its row slice.
  A version's files never change, so a new publication is a new key and the old one ages out of
  the LRU (bounded by ``serve.cache_mb`` per worker). Nothing lists the lake per request except
  the log listing and the index's new segments, at most once per ``catalog_ttl_s``.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from adapters import log
from batch_layer.entry import PublicationEntry
from batch_layer.published import BatchState
from batch_layer.views import BatchViews
from schemas.config import TallyConfig
from schemas.errors import DependencyError, TallyError, describe
from serving_layer.cache import ByteCache
from serving_layer.sizes import OBJECT, array_bytes, json_bytes
from speed_layer.archive_index import ArchiveIndex

LOG = log.get("serve.batch")


def _lake(what: str, fn: Callable[[], Any]) -> Any:
    """Run a lake call; any failure that is not ours becomes a DependencyError naming the lake."""
    try:
        return fn()
    except TallyError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, botocore, pyarrow: the lake is not usable
        LOG.warning("lake call failed: %s: %s: %s", what, type(exc).__name__, exc)
        raise DependencyError("lake", f"{what}: {describe(exc)}") from exc


@dataclass(frozen=True)
class Snapshot:
    days: dict[str, int]  # published day -> seq of its newest entry
    state: BatchState
    taken_at: float

    @property
    def horizon_ms(self) -> int | None:
        return self.state.horizon_ms


@functools.cache
def per_video_schema():
    """(video_id, count, watch_ms): per-video sums, as top-K adds them up."""
    import pyarrow as pa

    return pa.schema([("video_id", pa.string()), ("count", pa.int64()), ("watch_ms", pa.int64())])


# Publication entries a worker keeps (a few KB each: thousands of days).
ENTRY_CACHE_BYTES = 16 << 20

SEP = b"\x1f"  # below every character of a video id or an event type: keeps the sort order


class IndexedView:
    """One published view (a day at one granularity), indexed by (video, event type): its rows
    sorted by (video, event type, bucket) as numpy columns, and the sorted (video, event type)
    keys as one fixed-width bytes array, searched by bisection. No per-row or per-key Python
    object is kept: a day view of 10,000 videos weighs a few hundred KB."""

    def __init__(self, table) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        table = table.sort_by([("video_id", "ascending"), ("event_type", "ascending"),
                               ("bucket_start", "ascending")]).combine_chunks()
        self.bucket_ms = (table["bucket_start"].cast(pa.int64()).to_numpy() // 1000).astype(np.int64)
        self.count = table["count"].to_numpy().astype(np.int64)
        self.watch_ms = table["watch_ms"].to_numpy().astype(np.int64)
        if table.num_rows:
            joined = pc.binary_join_element_wise(table["video_id"], table["event_type"],
                                                 SEP.decode())
            runs = pc.run_end_encode(joined.combine_chunks() if hasattr(joined, "combine_chunks")
                                     else joined)
            self.ends = runs.run_ends.to_numpy().astype(np.int64)
            self.keys = np.array(runs.values.to_pylist(), dtype="S")
        else:
            self.ends = np.zeros(0, np.int64)
            self.keys = np.zeros(0, dtype="S1")
        self.starts = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)
        self.nbytes = 3 * OBJECT + array_bytes(self.bucket_ms, self.count, self.watch_ms, self.ends,
                                           self.starts, self.keys)

    def _rows(self, video_id: str, event_type: str) -> tuple[int, int] | None:
        import numpy as np

        key = video_id.encode() + SEP + event_type.encode()
        i = int(np.searchsorted(self.keys, key))
        if i < len(self.keys) and self.keys[i] == key:
            return int(self.starts[i]), int(self.ends[i])
        return None

    def slice(self, video_id: str, event_type: str, lo: int, hi: int):
        """(bucket ms, count, watch_ms) numpy arrays of one video and type, buckets in ``[lo, hi)``."""
        import numpy as np

        sl = self._rows(video_id, event_type)
        if sl is None:
            return self.bucket_ms[:0], self.count[:0], self.watch_ms[:0]
        s0, s1 = sl
        # A (video, type)'s rows are sorted by bucket: the range is one slice of them.
        i, j = (s0 + int(x) for x in np.searchsorted(self.bucket_ms[s0:s1], (lo, hi)))
        return self.bucket_ms[i:j], self.count[i:j], self.watch_ms[i:j]

    def per_video_table(self, event_type: str, lo: int, hi: int):
        """Per-video ``count`` and ``watch_ms`` sums of one type over buckets in ``[lo, hi)``, as
        an Arrow table with :func:`per_video_schema`."""
        import numpy as np
        import pyarrow as pa

        suffix = SEP + event_type.encode()
        groups = np.flatnonzero(np.char.endswith(self.keys, suffix)) if len(self.keys) else []
        if not len(groups):
            return per_video_schema().empty_table()
        lengths = self.ends[groups] - self.starts[groups]
        rows = np.repeat(self.starts[groups] - np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                         lengths) + np.arange(int(lengths.sum()))
        which = np.repeat(np.arange(len(groups)), lengths)
        keep = (self.bucket_ms[rows] >= lo) & (self.bucket_ms[rows] < hi)
        rows, which = rows[keep], which[keep]
        c, w = np.zeros(len(groups), np.int64), np.zeros(len(groups), np.int64)
        np.add.at(c, which, self.count[rows])
        np.add.at(w, which, self.watch_ms[rows])
        present = np.zeros(len(groups), bool)
        present[which] = True
        videos = [k[:-len(suffix)].decode() for k in self.keys[groups[present]].tolist()]
        return pa.table({"video_id": pa.array(videos, pa.string()), "count": c[present],
                         "watch_ms": w[present]}).cast(per_video_schema())


def _empty_view() -> IndexedView:
    from batch_layer.views import VIEW_SCHEMA

    return IndexedView(VIEW_SCHEMA.empty_table())


EMPTY_VIEW = _empty_view()


def _s3_fs_with_timeouts(cfg: TallyConfig):
    """The lake's S3 filesystem for the request path: bounded connect and request times (the
    batch layer's own filesystem, ``adapters.lake.arrow_s3_filesystem``, has none)."""
    from pyarrow import fs

    return fs.S3FileSystem(region=cfg.lake.s3_region, connect_timeout=3, request_timeout=10,
                           **_s3_kwargs(cfg))


def _s3_kwargs(cfg: TallyConfig) -> dict[str, Any]:
    from urllib.parse import urlparse

    from adapters.lake import s3_credentials

    kwargs: dict[str, Any] = {}
    if cfg.lake.s3_endpoint:
        u = urlparse(cfg.lake.s3_endpoint)
        kwargs["endpoint_override"] = u.netloc
        kwargs["scheme"] = u.scheme
    creds = s3_credentials(cfg)
    if creds:
        kwargs["access_key"] = creds["aws_access_key_id"]
        kwargs["secret_key"] = creds["aws_secret_access_key"]
    return kwargs


class BatchReader:
    """Per-process reader of the published batch state with its caches."""

    def __init__(self, cfg: TallyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.views = BatchViews(cfg)
        if not self.views.store.uri.startswith("file://"):
            self.views.fs = _s3_fs_with_timeouts(cfg)
        self.view_cache = ByteCache(cfg.serve.cache_mb * 1024 * 1024)
        # Publication entries never change once written: kept by (day, seq).
        self._entries = ByteCache(ENTRY_CACHE_BYTES)
        self._snapshot: Snapshot | None = None
        self.index = ArchiveIndex(self.views.store)
        self._lock = threading.Lock()

    def check_root(self) -> None:
        """A file:// lake whose root is gone (a volume not mounted) lists as empty, which would
        read as "nothing published": a DependencyError instead."""
        store = self.views.store
        if store.uri.startswith("file://") and not store.root.is_dir():
            LOG.warning("lake root %s is not a readable directory", store.root)
            raise DependencyError("lake", "the lake's root directory is missing or not readable")

    def snapshot(self) -> Snapshot:
        """One listing of the publication log, reused for ``serve.catalog_ttl_s``."""
        now = self.clock()
        snap = self._snapshot
        if snap is not None and now - snap.taken_at < self.cfg.serve.catalog_ttl_s:
            return snap
        self.check_root()
        days = _lake("listing the publication log", self.views.published_days)
        with self._lock:  # the index reader keeps what it read: one refresh at a time
            index = _lake("reading the archive's index", self.index.state)
        b = self.cfg.batch
        state = BatchState(days, index, self.entry, int(time.time() * 1000), b.lateness_ms,
                           b.dedup_span_days, b.horizon_start)
        snap = Snapshot(days, state, now)
        self._snapshot = snap
        return snap

    def entry(self, day: str, seq: int) -> PublicationEntry:
        key = (day, seq)
        e = self._entries.get(key)
        if e is not None:
            return e
        e = _lake(f"reading the publication entry of {day}", lambda: self.views.entry(day, seq))
        if e is None:
            raise DependencyError("lake", f"publication entry {seq} of {day} is missing")
        self._entries.put(key, e, json_bytes(e.record) * 2)  # the record and its parsed fields
        return e

    def version(self, snap: Snapshot, day: str) -> str | None:
        """The current version of a day in the snapshot (None: none published)."""
        if day not in snap.days:
            return None
        return self.entry(day, snap.days[day]).version

    def view(self, snap: Snapshot, day: str, granularity: str) -> tuple[str | None, IndexedView]:
        """(version, indexed view) of a day the plan answers from the batch views: its current
        version, or (None, an empty view) for a day without one (no raw data, or before
        ``batch.horizon_start``)."""
        if day not in snap.days:
            return None, EMPTY_VIEW
        e = self.entry(day, snap.days[day])
        key = (day, e.version, granularity)
        v = self.view_cache.get(key)
        if v is None:
            t0 = time.monotonic()
            table = _lake(f"reading the {granularity} view of {day}",
                          lambda: self.views.read(e, granularity))
            v = IndexedView(table)
            self.view_cache.put(key, v, v.nbytes)
            from serving_layer import metrics

            metrics.VIEW_LOADS.labels(granularity).inc()
            metrics.CACHE_BYTES.set(self.view_cache.bytes)
            metrics.CACHE_VIEWS.set(len(self.view_cache))
            log.kv(LOG, 20, "view loaded", day=day, version=e.version, granularity=granularity,
                   rows=table.num_rows, seconds=round(time.monotonic() - t0, 3))
        return e.version, v
