"""The queries behind the REST API: merged counts and top-K, over per-process resources.

:class:`Resources` holds what one worker process owns — the batch reader with its caches, the
HBase speed store (a happybase pool with the serving timeouts), the caches of speed views by hour
(speedcache.py), the Kafka producer — each created lazily on first use, and created again in a
process that finds it was made by another pid (a forked worker never shares its parent's sockets).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any, Callable

from schemas.granularity import DAY_MS, HOUR_MS, MINUTE_MS
from adapters import log
from schemas.config import TallyConfig
from schemas.errors import DependencyError, describe, public
from schemas.event import format_ms
from serving_layer.batch import BatchReader, Snapshot
from serving_layer.buckets import Buckets
from serving_layer.cache import MISSING, ByteCache
from serving_layer.hourshare import HourSnapshot, SharedHours
from serving_layer.metrics import RateMeter
from serving_layer.params import CountsQuery, TopQuery
from serving_layer.plan import Part, plan
from serving_layer.sizes import json_bytes
from serving_layer.speedcache import SpeedHourCache
from serving_layer.topk import Sparse, VideoIndex, add_up, top_k
from speed_layer import open_speed_views
from speed_layer.views import Progress, SpeedViews

LOG = log.get("serve")
# The progress record a worker keeps for serve.progress_ttl_s (one entry of a few KB).
PROGRESS_BYTES = 1 << 20


class Resources:
    def __init__(self, cfg: TallyConfig) -> None:
        self.cfg = cfg
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._batch: BatchReader | None = None
        self._speed = None
        self._producer = None
        self._top_cache: SpeedHourCache | None = None
        self._counts_cache: SpeedHourCache | None = None
        self._video_index: VideoIndex | None = None
        self.counts_rate = RateMeter()
        self._progress = ByteCache(PROGRESS_BYTES)
        # Top-K's open-hour totals shared with the other workers of this host (files only).
        self.hour_share = SharedHours(cfg.state_path / "run" / "top-hours", cfg.serve.top_ttl_s)

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: drop what the parent made, never use its sockets
            self._pid = os.getpid()
            self._batch = self._speed = self._producer = None
            self._top_cache = self._counts_cache = self._video_index = None
            self._progress = ByteCache(PROGRESS_BYTES)
            self.counts_rate = RateMeter()

    @property
    def batch(self) -> BatchReader:
        self._check_pid()
        if self._batch is None:
            with self._lock:
                if self._batch is None:
                    self._batch = BatchReader(self.cfg)
        return self._batch

    @property
    def speed(self) -> SpeedViews:
        self._check_pid()
        if self._speed is None:
            s = self.cfg.serve
            self._speed = open_speed_views(self.cfg, s.hbase_timeout_ms, s.hbase_retry_s)
        return self._speed

    @property
    def top_cache(self) -> SpeedHourCache:
        self._check_pid()
        if self._top_cache is None:
            s = self.cfg.serve
            self._top_cache = SpeedHourCache(s.top_cache_mb << 20, s.top_ttl_s)
        return self._top_cache

    @property
    def video_index(self) -> VideoIndex:
        """The numbers top-K gives video ids in this worker (topk.py)."""
        self._check_pid()
        if self._video_index is None:
            with self._lock:
                if self._video_index is None:
                    self._video_index = VideoIndex()
        return self._video_index

    @property
    def counts_cache(self) -> SpeedHourCache:
        self._check_pid()
        if self._counts_cache is None:
            self._counts_cache = SpeedHourCache(self.cfg.serve.counts_cache_mb << 20)
        return self._counts_cache

    def progress(self) -> Progress | None:
        """The speed layer's progress record, read again once older than
        ``serve.progress_ttl_s`` (the layer writes it once per micro-batch, seconds apart)."""
        self._check_pid()
        kept = self._progress.get("progress", MISSING)
        if kept is not MISSING:
            return kept
        record = self.speed.progress()
        self._progress.put("progress", record, json_bytes(record.record) if record else 0,
                           ttl_s=self.cfg.serve.progress_ttl_s)
        return record

    def producer(self):
        self._check_pid()
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    from adapters.producer import TallyProducer

                    ms = int(self.cfg.serve.kafka_timeout_s * 1000)
                    self._producer = TallyProducer(self.cfg, max_block_ms=ms,
                                                   client_id="tally-serve")
        return self._producer

    def drop_producer(self) -> None:
        """After a failed flush: start over with a fresh client on the next request."""
        p, self._producer = self._producer, None
        if p is not None:
            try:
                p._producer.close(timeout=1)
            except Exception:  # noqa: BLE001 - best effort
                pass


def _now_ms() -> int:
    return int(time.time() * 1000)


_NO_TIMES = {"speed_max_event_time": None, "speed_watermark": None, "speed_updated_at": None}


def freshness(progress: Progress | None, now_ms: int) -> dict[str, Any]:
    if progress is None:
        return {**_NO_TIMES, "lag_seconds": None, "dropped_late": None}
    max_ms = progress.max_event_time_ms
    return {**progress.times,
            "lag_seconds": round((now_ms - max_ms) / 1000, 3) if max_ms is not None else None,
            "dropped_late": progress.dropped_late}


def _speed_progress(res: Resources) -> tuple[Progress | None, str | None]:
    try:
        return res.progress(), None
    except Exception as exc:  # noqa: BLE001
        return None, _speed_failure(exc)


def _speed_failure(exc: BaseException, answered: bool = True) -> str:
    """The public text of a failed speed read, counted (``answered``: the request is answered
    without the speed part; else the error handler counts the dependency's failure)."""
    from serving_layer import metrics

    metrics.SPEED_FAILURES.inc()
    if answered:
        metrics.BACKEND_ERRORS.labels("hbase").inc()
    if isinstance(exc, DependencyError):
        return public(str(exc))
    # Thrift errors carry the server's whole Java stack trace: its first line says enough.
    LOG.warning("speed store read failed: %s: %s", type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "")
    return f"hbase: {describe(exc)}"


def _speed_part(res: Resources, p, read) -> tuple[Progress | None, str | None]:
    """Run ``read`` (which adds the speed minutes of the plan's speed parts, and may return the
    progress record it read) and read the progress record unless it did: (progress, speed error).
    DependencyError when the speed views fail and nothing else answers any of the range."""
    if not p.parts("speed"):
        return _speed_progress(res)[0], None
    try:
        progress = read()
        return (progress if progress is not None else res.progress()), None
    except Exception as exc:  # noqa: BLE001 - any speed-store failure: answer without it
        whole = not p.parts("batch")
        error = _speed_failure(exc, answered=not whole)
    if whole:
        raise DependencyError("hbase", f"{error.removeprefix('hbase: ')} (the whole range is "
                                       f"answered by the speed views)")
    return None, error


def query_plan(res: Resources, snap: Snapshot, from_ms: int, to_ms: int, size: int,
               now_ms: int):
    """The merge plan of a range in one snapshot: its horizon and pending days."""
    state = snap.state
    pending = {d: d in snap.days for d in state.pending_days(from_ms, to_ms)}
    return plan(from_ms, to_ms, size, state.horizon_ms, now_ms, res.cfg.hbase.speed_ttl_days,
                pending)


def _state_fields(snap: Snapshot, p) -> dict[str, Any]:
    return {"batch_horizon": format_ms(snap.horizon_ms) if snap.horizon_ms is not None else None,
            "pending_days": list(p.pending_days),
            "pinned_days": snap.state.pinned_days(p.from_ms, p.to_ms)}


def counts(res: Resources, q: CountsQuery, now_ms: int | None = None) -> dict[str, Any]:
    """The answer of ``GET /v1/videos/{id}/counts`` (DependencyError: nothing can answer)."""
    now_ms = _now_ms() if now_ms is None else now_ms
    cfg = res.cfg
    snap: Snapshot = res.batch.snapshot()  # ONE state of the publication log for this request
    s = cfg.serve
    shared = s.counts_open_shared and res.counts_rate.tick() >= s.counts_shared_min_rate
    p = query_plan(res, snap, q.from_ms, q.to_ms, q.size, now_ms)

    import numpy as np

    size = q.size
    count = np.zeros((q.to_ms - q.from_ms) // size, np.int64)  # one slot per bucket
    watch = np.zeros_like(count)
    versions: dict[str, str | None] = {}
    for seg in p.segments:
        if seg.source != "batch":
            continue
        version, view = res.batch.view(snap, seg.day, q.granularity)
        versions[seg.day] = version
        bms, c, w = view.slice(q.video_id, q.event_type, seg.lo, seg.hi)
        if len(bms):  # a view has one row per (video, type, bucket)
            i = (bms - q.from_ms) // size
            count[i] = c
            watch[i] = w

    def add_minutes():
        progress = res.progress()  # before the minutes: it says which hours are closed
        per = size // MINUTE_MS  # speed parts start and end on bucket boundaries
        snapshots = []
        for part in p.parts("speed"):
            mc, mw, as_of = speed_minutes(res, q.video_id, q.event_type, part.lo, part.hi,
                                          progress, now_ms, shared)
            a, b = (part.lo - q.from_ms) // size, (part.hi - q.from_ms) // size
            if per == 1:
                count[a:b], watch[a:b] = mc, mw
            else:
                count[a:b] = mc.reshape(-1, per).sum(axis=1)
                watch[a:b] = mw.reshape(-1, per).sum(axis=1)
            snapshots.append(as_of)
        # An open hour from a snapshot: freshness as of the oldest snapshot used.
        return _oldest(snapshots) or progress

    progress, speed_error = _speed_part(res, p, add_minutes)

    total, watch_total = int(count.sum()), int(watch.sum())  # the speed part is 0 when unread
    buckets = Buckets(q.from_ms, q.to_ms, size, count, watch, p.runs(), bool(speed_error))
    beyond = [seg for seg in p.segments if seg.beyond]

    body: dict[str, Any] = {
        "video_id": q.video_id, "event_type": q.event_type, "granularity": q.granularity,
        "from": format_ms(q.from_ms), "to": format_ms(q.to_ms),
        "total": total, "watch_ms": watch_total, "buckets": buckets,
        **_state_fields(snap, p),
        "batch_versions": versions,
        "freshness": freshness(progress, now_ms),
        "speed_unavailable": bool(speed_error),
    }
    if speed_error:
        body["partial"] = True
        body.setdefault("warnings", []).append(
            f"speed views unavailable ({speed_error}): the buckets answered by the speed views "
            f"have no count; total covers the batch part")
    _note_days(body, versions, p)
    if beyond:
        body.setdefault("warnings", []).append(
            f"buckets before {format_ms(p.retention_floor_ms)} after the batch horizon lie beyond "
            f"speed retention ({cfg.hbase.speed_ttl_days} days): their counts may be incomplete")
    return body


HOUR_BYTES = 112 + 120 * 8  # a kept hour: a numpy row of 60 counts then 60 watch_ms
DAY_BYTES = 128 + 24 * 120 * 8  # a kept day: 24 such rows


def speed_minutes(res: Resources, video_id: str, event_type: str, lo: int, hi: int,
                  progress: Progress | None, now_ms: int, shared: bool = False):
    """Per-minute (counts, watch_ms) numpy arrays of one (video, event type) over ``[lo, hi)``,
    and the progress record of the oldest open-hour snapshot used (None: none was used).

    The leading whole days and hours that ended before the speed layer's watermark come from
    the worker's cache (a whole UTC day as one entry); the rest from ONE contiguous scan of the
    speed table, which stops at :func:`data_limit_ms` — except, when ``shared``
    (``serve.counts_open_shared`` and this worker busy enough), the hours still open near now,
    which come from the host's snapshots of the open hours (hourshare.py, about
    ``serve.top_ttl_s`` old). The closed days and hours the scan read whole are kept."""
    import numpy as np

    hour, minute = HOUR_MS, MINUTE_MS
    first = lo // hour * hour
    grid = np.zeros((-(-hi // hour) - first // hour, 120), np.int64)  # per hour: 60 c, 60 w
    end = grid.shape[0] * hour + first
    limit = min(hi, data_limit_ms(res.cfg, now_ms))
    cache = res.counts_cache
    watermark = progress.watermark_ms if progress else None
    caching = cache.enabled and watermark is not None
    closed_end = watermark // hour * hour if watermark is not None else first  # h < it: closed

    def block(h: int) -> tuple[tuple, int, int]:
        """The cache entry at hour ``h``: (key, end, rows) — a whole day when one fits."""
        if h % DAY_MS == 0 and h + DAY_MS <= min(end, closed_end):
            return (video_id, event_type, "day", h), h + DAY_MS, 24
        return (video_id, event_type, h), h + hour, 1

    scan_lo = lo
    if caching:
        # Whole hours: a range starting mid-hour scans that hour whole, so that it can be kept.
        scan_lo = h = first
        while h < limit and h < closed_end:
            key, nxt, rows = block(h)
            kept = cache.get(key)
            if kept is None:
                break
            if len(kept):  # () is a day or hour without a minute row
                i = (h - first) // hour
                grid[i:i + rows] = kept
            scan_lo = h = nxt
    scan_hi, as_of = limit, None
    if shared and watermark is not None:
        # Open hours (from the first one not closed) near now, from the shared snapshots.
        open_lo = max(scan_lo, closed_end, (now_ms // hour - SHARED_OPEN_HOURS) * hour)
        open_lo = open_lo // hour * hour
        snaps = []
        for h in range(open_lo, limit, hour):
            snap = res.top_cache.hour((res.cfg.hbase.top_table, event_type, h), False,
                                      functools.partial(_open_hour, res, event_type, h))
            if not isinstance(snap, HourSnapshot):
                snaps = []
                break
            snaps.append((h, snap))
        if snaps:
            scan_hi = min(limit, open_lo)
            for h, snap in snaps:
                m, c, w = snap.minutes(video_id)
                row = grid[(h - first) // hour]
                row[m], row[60 + m] = c, w
            as_of = _oldest([snap.progress for _, snap in snaps])
    if scan_lo < scan_hi:
        read = res.speed.read_minutes(video_id, event_type, scan_lo, scan_hi)
        if read:
            m = (np.fromiter((r.minute_ms for r in read), np.int64, len(read)) - first) // minute
            hi_, mi = np.divmod(m, 60)
            grid[hi_, mi] = np.fromiter((r.count for r in read), np.int64, len(read))
            grid[hi_, 60 + mi] = np.fromiter((r.watch_ms for r in read), np.int64, len(read))
        if caching:  # every day and hour the scan read whole and that is closed
            last = min(scan_hi // hour * hour, closed_end)
            h = scan_lo
            while h < last:
                key, nxt, rows = block(h)
                if nxt > last:
                    key, nxt, rows = (video_id, event_type, h), h + hour, 1
                i = (h - first) // hour
                part = grid[i:i + rows] if rows > 1 else grid[i]
                if part.any():
                    cache.put(key, part.copy(), True, DAY_BYTES if rows > 1 else HOUR_BYTES)
                else:
                    cache.put(key, (), True, 0)
                h = nxt
    off, n = (lo - first) // minute, (hi - lo) // minute
    return grid[:, :60].reshape(-1)[off:off + n], grid[:, 60:].reshape(-1)[off:off + n], as_of


def _oldest(records: list[Progress | None]) -> Progress | None:
    """Of progress records, the one written first (None when there are none)."""
    return min((r for r in records if r), key=lambda r: r.updated_at_ms or 0, default=None)


def _open_hour(res: Resources, event_type: str, hour_ms: int) -> HourSnapshot:
    """A snapshot of one open hour (every video's minutes), shared by the host's workers."""
    def read():
        progress = res.speed.progress()  # BEFORE the scan: the snapshot holds at least it
        return res.speed.hour_minutes(event_type, hour_ms), progress

    h = res.cfg.hbase
    table, age = res.hour_share.load(f"{h.host}_{h.port}.{h.top_table}.{event_type}.{hour_ms}", read)
    return HourSnapshot(table, age, res.video_index)


def data_limit_ms(cfg: TallyConfig, now_ms: int) -> int:
    """No speed row lies in a minute that starts at or after this instant: the contract refuses
    events more than ``events.max_future_ms`` ahead of the receiving clock (a minute more for
    the clocks of two hosts). Reads stop here; the buckets after it are listed as zeros."""
    minute = MINUTE_MS
    return -(-(now_ms + cfg.events.max_future_ms + minute) // minute) * minute


# Open hours this close to now are read from the snapshots shared by the host's workers
# (hourshare.py); older open hours (a speed layer lagging behind) by one scan per request, so
# no query can make the host write a snapshot file per hour of its range.
SHARED_OPEN_HOURS = 3


def _digest(keys: list[tuple]) -> bytes:
    """A fixed-size cache key for a list of part keys (a 400-day sum names ~800 parts)."""
    import hashlib

    return hashlib.blake2b(repr(keys).encode(), digest_size=16).digest()


def _kept(res: Resources, key: tuple, load: Callable[[], Sparse]) -> Sparse:
    """A part that never changes, from the top-K cache or ``load()`` (then kept)."""
    cache = res.top_cache
    value = cache.get(key)
    if value is None:
        value = load()
        cache.put(key, value, True, value.nbytes)
    return value


def _closed_speed(res: Resources, index: VideoIndex, event_type: str,
                  blocks: list[tuple[int, int]]) -> list[tuple[tuple, Sparse]]:
    """Per-video totals of closed speed blocks (whole hours or days, ascending, hours that ended
    before the watermark read before this call): kept in the top-K cache; those not kept are
    read by one scan per run of adjacent ones, whatever their number of empty hours."""
    import numpy as np

    cache = res.top_cache
    table = res.cfg.hbase.top_table
    keys = [("speed", table, event_type, lo, hi) for lo, hi in blocks]
    values: list[Sparse | None] = [cache.get(k) for k in keys]
    i = 0
    while i < len(blocks):
        if values[i] is not None:
            i += 1
            continue
        j = i
        while j + 1 < len(blocks) and values[j + 1] is None and blocks[j + 1][0] == blocks[j][1]:
            j += 1
        hours, videos, counts, watches = res.speed.hour_totals(event_type, blocks[i][0],
                                                               blocks[j][1])
        hours_a = np.asarray(hours, np.int64)
        nums = index.numbers(videos)
        counts_a, watches_a = np.asarray(counts, np.int64), np.asarray(watches, np.int64)
        starts = np.array([lo for lo, _ in blocks[i:j + 1]], np.int64)
        which = np.searchsorted(starts, hours_a, side="right") - 1
        for k in range(i, j + 1):
            sel = which == k - i
            u, inv = np.unique(nums[sel], return_inverse=True)
            c, w = np.zeros(len(u), np.int64), np.zeros(len(u), np.int64)
            np.add.at(c, inv, counts_a[sel])
            np.add.at(w, inv, watches_a[sel])
            values[k] = Sparse(u.astype(np.int64), c, w)
            cache.put(keys[k], values[k], True, values[k].nbytes)
        i = j + 1
    return list(zip(keys, values))  # type: ignore[arg-type]


def _split_closed(a: int, b: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Whole hours ``[a, b)`` as (whole UTC days, the other hours)."""
    days, hours = [], []
    h = a
    while h < b:
        if h % DAY_MS == 0 and h + DAY_MS <= b:
            days.append((h, h + DAY_MS))
            h += DAY_MS
        else:
            hours.append((h, h + HOUR_MS))
            h += HOUR_MS
    return days, hours


def top(res: Resources, q: TopQuery, now_ms: int | None = None) -> dict[str, Any]:
    """The answer of ``GET /v1/top`` (DependencyError: nothing can answer)."""
    now_ms = _now_ms() if now_ms is None else now_ms
    cfg = res.cfg
    snap = res.batch.snapshot()
    p = query_plan(res, snap, q.from_ms, q.to_ms, MINUTE_MS, now_ms)
    # Per-video sums (topk.Sparse over the worker's video numbers), added up at the end. Parts
    # that never change — published batch views, speed hours behind the watermark — are kept in
    # the top-K cache one by one, and the whole days among them (the bulk of a long range) also
    # as one sum, kept under a digest of their keys: moving an end of the range by a minute
    # re-adds only the parts at the ends. Open hours and the minute ends are read per request.
    index = res.video_index
    interior: list[tuple[tuple, Callable[[], Sparse]]] = []  # whole batch days
    ends: list[tuple[tuple, Callable[[], Sparse]]] = []  # the batch parts of partial days
    versions: dict[str, str | None] = {}
    for seg in p.segments:
        if seg.source != "batch":
            continue
        version = res.batch.version(snap, seg.day)
        versions[seg.day] = version
        if version is None:  # no published view: nothing to add
            continue
        whole = seg.lo % DAY_MS == 0 and seg.hi - seg.lo == DAY_MS
        # The coarsest view that covers each part: a whole day from the day view, whole hours
        # from the hour view (60 times fewer rows to sum than the minute view), the rest by minute.
        for gran, a, b in _coarsest(seg.lo, seg.hi, whole):
            key = ("batch", seg.day, version, gran, q.event_type, a, b)
            load = functools.partial(_view_sums, res, snap, index, seg.day, gran, q.event_type, a, b)
            (interior if whole else ends).append((key, load))

    speed_days: list[tuple[int, int]] = []  # closed whole days of the speed part
    speed_hours: list[tuple[int, int]] = []  # other closed whole hours
    volatile: list[Sparse] = []
    snapshots: list[Progress | None] = []  # progress records of the open-hour snapshots
    limit = data_limit_ms(cfg, now_ms)
    hour = HOUR_MS

    def add_part(lo: int, hi: int, watermark: int | None) -> None:
        # Nothing to read after the limit; its hour is read whole (nothing lies after it).
        hi = min(hi, -(-limit // hour) * hour)
        if hi <= lo:
            return
        a, b = -(-lo // hour) * hour, hi // hour * hour
        edges = [(lo, hi)] if a >= b else [(x, y) for x, y in ((lo, a), (b, hi)) if y > x]
        if a < b:
            # Hours h with h + hour <= watermark are closed; then the open ones.
            c = a if watermark is None else min(max(a, watermark // hour * hour), b)
            days, hours = _split_closed(a, c)
            speed_days.extend(days)
            speed_hours.extend(hours)
            near = max(c, (now_ms // hour - SHARED_OPEN_HOURS) * hour)
            if c < min(near, b):  # open hours long past: a speed layer lagging or stopped
                volatile.append(_totals(index, res.speed.hour_totals(q.event_type, c, min(near, b))))
            for h in range(max(near, c), b, hour):
                snap_h = res.top_cache.hour((cfg.hbase.top_table, q.event_type, h), False,
                                            functools.partial(_open_hour, res, q.event_type, h))
                snapshots.append(snap_h.progress)
                volatile.append(snap_h.totals)
        for x, y in edges:
            sums: dict[str, tuple[int, int]] = {}
            for m in res.speed.scan_type_minutes(q.event_type, x, y):
                if x <= m.minute_ms < y:
                    c_, w_ = sums.get(m.video_id, (0, 0))
                    sums[m.video_id] = (c_ + m.count, w_ + m.watch_ms)
            volatile.append(Sparse.of_dict(index, sums))

    speed_kept: list[Sparse] = []
    interior_sum: list = [None]

    def add_minutes():
        progress = res.progress()  # BEFORE any speed row: it says which hours are closed
        watermark = progress.watermark_ms if progress else None
        for part in p.parts("speed"):
            add_part(part.lo, part.hi, watermark)
        # The whole-day sum with the closed speed days: their reads only when it is not kept.
        keys = [k for k, _ in interior] + [("speed", cfg.hbase.top_table, q.event_type, a, b)
                                           for a, b in speed_days]
        interior_sum[0] = _interior_sum(res, index, keys, interior, q.event_type, speed_days)
        speed_kept.extend(v for _, v in _closed_speed(res, index, q.event_type, speed_hours))
        # Open hours from snapshots: the answer's freshness is that of the oldest one used.
        return _oldest(snapshots) or progress

    progress, speed_error = _speed_part(res, p, add_minutes)
    if speed_error or not p.parts("speed"):  # what the speed part read before it failed is not used
        speed_kept.clear()
        volatile.clear()
        interior_sum[0] = _interior_sum(res, index, [k for k, _ in interior], interior,
                                        q.event_type, [])
    parts = [_kept(res, key, load) for key, load in ends] + speed_kept + volatile
    ranked = top_k(index, add_up(index, interior_sum[0], parts), q.k)
    body: dict[str, Any] = {
        "event_type": q.event_type, "from": format_ms(q.from_ms), "to": format_ms(q.to_ms),
        "k": q.k,
        "items": [{"video_id": v, "count": c, "watch_ms": w} for v, c, w in ranked],
        "exact": not p.parts("speed") and not p.parts("none") and not p.pending_days,
        **_state_fields(snap, p),
        "batch_versions": versions,
        "sources": {src: [_part(x) for x in p.parts(src)] for src in ("batch", "speed", "none")},
        "freshness": freshness(progress, now_ms),
        "speed_unavailable": bool(speed_error),
    }
    _note_days(body, versions, p)
    if speed_error:
        body["partial"] = True
        body.setdefault("warnings", []).append(
            f"speed views unavailable ({speed_error}): the list covers only the parts answered "
            f"by the batch views")
    if any(seg.beyond for seg in p.segments):
        body.setdefault("warnings", []).append(
            f"part of the range after the batch horizon lies beyond speed retention "
            f"({cfg.hbase.speed_ttl_days} days): counts may be incomplete")
        body["beyond_retention"] = True
    return body


def _interior_sum(res: Resources, index: VideoIndex, keys: list[tuple],
                  batch_parts: list[tuple[tuple, Callable[[], Sparse]]], event_type: str,
                  speed_days: list[tuple[int, int]]):
    """The sum of the whole days (batch parts, then closed speed days): kept under a digest."""
    if not keys:
        return None
    cache = res.top_cache
    key = ("sum", _digest(keys))
    summed = cache.get(key)
    if summed is None:
        parts = [_kept(res, k, load) for k, load in batch_parts]
        parts += [v for _, v in _closed_speed(res, index, event_type, speed_days)]
        summed = add_up(index, None, parts)
        cache.put(key, summed, True, summed.nbytes)
    return summed


def _totals(index: VideoIndex, columns: tuple) -> Sparse:
    """Per-video totals of ``store.hour_totals`` columns."""
    import numpy as np

    _hours, videos, counts, watches = columns
    if not videos:
        return Sparse(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    u, inv = np.unique(index.numbers(videos), return_inverse=True)
    c, w = np.zeros(len(u), np.int64), np.zeros(len(u), np.int64)
    np.add.at(c, inv, np.asarray(counts, np.int64))
    np.add.at(w, inv, np.asarray(watches, np.int64))
    return Sparse(u.astype(np.int64), c, w)


def _view_sums(res: Resources, snap: Snapshot, index: VideoIndex, day: str, gran: str,
               event_type: str, lo: int, hi: int) -> Sparse:
    _version, view = res.batch.view(snap, day, gran)
    return Sparse.of_table(index, view.per_video_table(event_type, lo, hi))


def _coarsest(lo: int, hi: int, whole_day: bool) -> list[tuple[str, int, int]]:
    """``[lo, hi)`` within one day (minute-aligned) as (granularity, lo, hi) parts."""
    if whole_day:
        return [("day", lo, hi)]
    h = HOUR_MS
    a, b = -(-lo // h) * h, hi // h * h
    if a >= b:
        return [("minute", lo, hi)]
    return [(g, x, y) for g, x, y in (("minute", lo, a), ("hour", a, b), ("minute", b, hi))
            if y > x]


def _note_days(body: dict[str, Any], versions: dict[str, str | None], p) -> None:
    if p.pending_days:
        body.setdefault("warnings", []).append(
            f"pending days {', '.join(p.pending_days)}: raw data their batch views do not cover "
            f"yet (answered from their published version, else the speed views, else zero with "
            f"source none) until the nightly run computes them")
    days = sorted(d for d, v in versions.items() if v is None and d not in p.pending_days)
    if days:
        body.setdefault("warnings", []).append(
            f"{days[0]}..{days[-1]}: no published view and no raw data (or before "
            f"batch.horizon_start): counted as empty (batch_versions null)")


def _part(part: Part) -> dict[str, str] | None:
    return {"from": format_ms(part.lo), "to": format_ms(part.hi)} if part else None
