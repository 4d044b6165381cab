"""The speed views' store on HBase: what the streaming job writes, and the read interface of
speed_layer/views.py implemented over the same tables.

Writes are ABSOLUTE values (``put`` of the whole count of a minute), never increments, so a
micro-batch replayed after a crash writes the same cells again and changes nothing. happybase is
used through a ``ConnectionPool`` in short ``with`` blocks, with batched puts. Failures that a
retry may cure (Thrift down, a timeout) are retried with exponential backoff for
``hbase.write_retry_s``; then :class:`~schemas.errors.DependencyError` fails the batch.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from adapters import log
from schemas import rowkey
from schemas.config import TallyConfig
from schemas.errors import DependencyError
from speed_layer.views import DayCounters, MinuteCount, Progress

LOG = log.get("speed.store")
_LONG = struct.Struct(">q")
PROGRESS_ROW = b"progress:speed"
ARCHIVE_ROW = b"progress:archive"
# Per UTC day of event time: the events dropped as late and those left out as ahead of the
# clock, one cell per day (only the streaming job's listener writes it).
COUNTERS_ROW = b"counters:speed"


def _retriable(exc: BaseException) -> bool:
    from thriftpy2.transport import TTransportException

    return isinstance(exc, (TTransportException, socket.error, TimeoutError, BrokenPipeError,
                            ConnectionError, EOFError))


_POOLS: dict[tuple, Any] = {}
# A forked child (a gunicorn worker) never uses its parent's sockets: it makes its own pools.
os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(cfg: TallyConfig):
    """One pool per process and endpoint, created on first use (after a fork, in the child)."""
    import happybase

    key = (cfg.hbase.host, cfg.hbase.port, cfg.hbase.timeout_ms)
    pool = _POOLS.get(key)
    if pool is None:
        pool = happybase.ConnectionPool(cfg.hbase.pool_size, host=cfg.hbase.host,
                                        port=cfg.hbase.port, timeout=cfg.hbase.timeout_ms,
                                        autoconnect=False)
        _POOLS[key] = pool
    return pool


def _reset_pool(cfg: TallyConfig) -> None:
    _POOLS.pop((cfg.hbase.host, cfg.hbase.port, cfg.hbase.timeout_ms), None)


class HBaseSpeedStore:
    """Speed views in HBase: minute rows in the salted speed table, hour rows for top-K."""

    def __init__(self, cfg: TallyConfig, retry_s: float | None = None):
        self.cfg = cfg
        self.buckets = cfg.hbase.salt_buckets
        self.retry_s = cfg.hbase.write_retry_s if retry_s is None else retry_s
        self.retries = 0  # calls retried by this store (the stream's metrics count them)

    def _with_retry(self, what: str, fn):
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        attempt = 0
        while True:
            attempt += 1
            try:
                with _pool(self.cfg).connection() as conn:
                    return fn(conn)
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not _retriable(exc):
                    raise
                _reset_pool(self.cfg)
                if time.monotonic() + delay > deadline:
                    raise DependencyError("hbase", f"{what} failed after {attempt} attempts over "
                                                   f"{self.retry_s:.0f}s: {type(exc).__name__}: {exc}"
                                          ) from exc
                self.retries += 1
                log.kv(LOG, 30, "hbase call failed; retrying", what=what, attempt=attempt,
                       delay_s=round(delay, 2), error=type(exc).__name__)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    def write_minutes(self, rows: Iterable[MinuteCount]) -> int:
        rows = list(rows)
        if not rows:
            return 0

        def write(conn) -> int:
            speed = conn.table(self.cfg.hbase.speed_table)
            top = conn.table(self.cfg.hbase.top_table)
            with speed.batch(batch_size=2000) as sb, top.batch(batch_size=2000) as tb:
                for r in rows:
                    c, w = _LONG.pack(r.count), _LONG.pack(r.watch_ms)
                    sb.put(rowkey.encode(r.video_id, r.event_type, r.minute_ms, self.buckets),
                           {b"m:c": c, b"m:w": w})
                    qc, qw = rowkey.minute_qualifiers(r.minute_ms)
                    tb.put(rowkey.top_key(r.event_type, r.minute_ms, r.video_id), {qc: c, qw: w})
            return len(rows)

        return self._with_retry("write_minutes", write)

    def read_minutes(self, video_id: str, event_type: str, from_ms: int,
                     to_ms: int) -> list[MinuteCount]:
        lo, hi = rowkey.scan_range(video_id, event_type, from_ms, to_ms, self.buckets)
        # At most one row per minute lies in the range, so one fetch of that many rows ends the
        # scan: open, fetch, close (happybase's scan asks once more to learn that it has ended).
        most = max(1, -(-(to_ms - from_ms) // rowkey.MS_PER_MINUTE))

        def scan(conn) -> list[MinuteCount]:
            from Hbase_thrift import TScan

            client = conn.client
            name = conn.table(self.cfg.hbase.speed_table).name
            sid = client.scannerOpenWithScan(name, TScan(startRow=lo, stopRow=hi,
                                                         caching=min(most, 5000)), {})
            try:
                out: list[MinuteCount] = []
                while True:
                    asked = min(most - len(out), 5000)
                    items = client.scannerGetList(sid, asked)
                    # Every row of the scan is this (video, type)'s: only the minute is read back.
                    out.extend(MinuteCount(video_id, event_type, rowkey.minute_of(r.row),
                                           _LONG.unpack(r.columns[b"m:c"].value)[0],
                                           _LONG.unpack(r.columns[b"m:w"].value)[0])
                               for r in items)
                    if len(items) < asked or len(out) >= most:  # fewer than asked: the end
                        return out
            finally:
                client.scannerClose(sid)

        return self._with_retry("read_minutes", scan)

    def scan_all_minutes(self) -> Iterator[MinuteCount]:
        """Every minute row (tests and audits; not for the request path)."""
        with _pool(self.cfg).connection() as conn:
            for key, cells in conn.table(self.cfg.hbase.speed_table).scan(batch_size=5000):
                v, t, m = rowkey.decode(key)
                yield MinuteCount(v, t, m, _LONG.unpack(cells[b"m:c"])[0],
                                  _LONG.unpack(cells[b"m:w"])[0])

    def scan_type_minutes(self, event_type: str, from_ms: int, to_ms: int) -> list[MinuteCount]:
        """Every video's minutes of one event type in the hours ``[from_ms, to_ms)`` (from the
        top-K table: one contiguous scan, for the audit and top-K)."""
        lo, hi = rowkey.top_scan_range(event_type, from_ms, to_ms)

        def scan(conn) -> list[MinuteCount]:
            out = []
            for key, cells in conn.table(self.cfg.hbase.top_table).scan(row_start=lo, row_stop=hi,
                                                                        batch_size=2000):
                t, hour_ms, video = rowkey.decode_top_key(key)
                for q, v in cells.items():
                    if q.startswith(b"h:c"):
                        m = q[3]
                        w = cells.get(b"h:w" + bytes((m,)))
                        out.append(MinuteCount(video, t, hour_ms + m * rowkey.MS_PER_MINUTE,
                                               _LONG.unpack(v)[0], _LONG.unpack(w)[0] if w else 0))
            return out

        return self._with_retry("scan_type_minutes", scan)

    def hour_totals(self, event_type: str, from_ms: int,
                    to_ms: int) -> tuple[list[int], list[str], list[int], list[int]]:
        """Every video's totals per UTC hour of one event type over the hours ``[from_ms,
        to_ms)`` (hour-aligned), from the top-K table in one contiguous scan, as columns: hour
        start (ms), video id, count, watch_ms. The work is that of the rows: empty hours cost
        nothing."""
        lo, hi = rowkey.top_scan_range(event_type, from_ms, to_ms)
        unpack = _LONG.unpack

        def scan(conn):
            hours: list[int] = []
            videos: list[str] = []
            counts: list[int] = []
            watches: list[int] = []
            for key, cells in conn.table(self.cfg.hbase.top_table).scan(row_start=lo, row_stop=hi,
                                                                        batch_size=5000):
                _t, hour_ms, video = rowkey.decode_top_key(key)
                c = w = 0
                for q, v in cells.items():
                    if q[:3] == b"h:c":
                        c += unpack(v)[0]
                    elif q[:3] == b"h:w":
                        w += unpack(v)[0]
                hours.append(hour_ms)
                videos.append(video)
                counts.append(c)
                watches.append(w)
            return hours, videos, counts, watches

        return self._with_retry("hour_totals", scan)

    def hour_minutes(self, event_type: str, hour_ms: int) -> tuple[list[str], list[int],
                                                                    list[int], list[int]]:
        """Every video's minutes of one event type in one UTC hour, from the top-K table (one
        contiguous scan), as columns: video id, minute of the hour (0-59), count, watch_ms;
        sorted by video."""
        lo, hi = rowkey.top_scan_range(event_type, hour_ms, hour_ms + rowkey.MS_PER_HOUR)
        unpack = _LONG.unpack

        def scan(conn):
            videos: list[str] = []
            minutes: list[int] = []
            counts: list[int] = []
            watches: list[int] = []
            for key, cells in conn.table(self.cfg.hbase.top_table).scan(row_start=lo, row_stop=hi,
                                                                        batch_size=5000):
                video = rowkey.decode_top_key(key)[2]
                for q, v in cells.items():
                    if q[:3] == b"h:c":
                        w = cells.get(b"h:w" + q[3:4])
                        videos.append(video)
                        minutes.append(q[3])
                        counts.append(unpack(v)[0])
                        watches.append(unpack(w)[0] if w else 0)
            return videos, minutes, counts, watches

        return self._with_retry("hour_minutes", scan)

    def write_progress(self, record: dict[str, Any], row: bytes = PROGRESS_ROW) -> None:
        payload = json.dumps(record, sort_keys=True).encode()
        self._with_retry("write_progress", lambda conn: conn.table(self.cfg.hbase.meta_table)
                         .put(row, {b"p:record": payload}))

    def read_progress(self, row: bytes = PROGRESS_ROW) -> dict[str, Any] | None:
        cells = self._with_retry("read_progress", lambda conn: conn.table(
            self.cfg.hbase.meta_table).row(row, columns=[b"p:record"]))
        return json.loads(cells[b"p:record"]) if cells else None

    def progress(self) -> Progress | None:
        return Progress.parse(self.read_progress())

    def add_day_counters(self, deltas: dict[str, list[int]]) -> None:
        """Add [dropped late, ahead of the clock] to each day's counters (read, add, put: the
        listener is the only writer)."""
        cols = [f"p:d{d}".encode() for d in sorted(deltas)]

        def update(conn) -> None:
            table = conn.table(self.cfg.hbase.meta_table)
            have = table.row(COUNTERS_ROW, columns=cols)
            out = {}
            for d in sorted(deltas):
                col = f"p:d{d}".encode()
                cur = json.loads(have[col]) if col in have else {"dropped_late": 0, "ahead_of_clock": 0}
                cur["dropped_late"] = max(0, cur["dropped_late"] + int(deltas[d][0]))
                cur["ahead_of_clock"] = max(0, cur["ahead_of_clock"] + int(deltas[d][1]))
                out[col] = json.dumps(cur, sort_keys=True).encode()
            table.put(COUNTERS_ROW, out)

        self._with_retry("add_day_counters", update)

    def read_day_counters(self, day: str) -> dict[str, int]:
        """{"dropped_late": n, "ahead_of_clock": n} of one UTC day of event time."""
        col = f"p:d{day}".encode()
        cells = self._with_retry("read_day_counters", lambda conn: conn.table(
            self.cfg.hbase.meta_table).row(COUNTERS_ROW, columns=[col]))
        return json.loads(cells[col]) if col in cells else {"dropped_late": 0, "ahead_of_clock": 0}

    def check(self) -> str:
        """The speed, top and meta tables exist with the config's TTLs (else RuntimeError)."""
        want = {self.cfg.hbase.speed_table, self.cfg.hbase.top_table, self.cfg.hbase.meta_table}
        tables = self._with_retry("tables", lambda conn: conn.tables())
        missing = want - {t.decode() for t in tables}
        if missing:
            raise RuntimeError(f"tables missing: {', '.join(sorted(missing))}")
        specs = [s for s in rowkey.tables(self.cfg) if s.name in want]
        differ = self._with_retry("table ttls", lambda conn: ttl_mismatches(conn, specs))
        if differ:
            raise RuntimeError("; ".join(m.describe() for m in differ)
                               + "; run `tally stack up` to alter the table(s) to the config's TTL")
        return "speed, top and meta tables present, TTLs as configured"

    def day_counters(self, day: str) -> DayCounters:
        c = self.read_day_counters(day)
        return DayCounters(int(c.get("dropped_late", 0)), int(c.get("ahead_of_clock", 0)))


def write_partition(cfg: TallyConfig, rows: Iterator[Any]) -> int:
    """The rows of one partition of a micro-batch's updated minutes, written; returns the HBase
    calls retried on the way."""
    store = HBaseSpeedStore(cfg)
    chunk: list[MinuteCount] = []
    for r in rows:
        chunk.append(MinuteCount(r["video_id"], r["event_type"], r["minute_ms"], r["count"],
                                 r["watch_ms"]))
        if len(chunk) >= 5000:
            store.write_minutes(chunk)
            chunk = []
    store.write_minutes(chunk)
    return store.retries


# HBase's TTL of a family kept forever (HConstants.FOREVER); a TableSpec says 0.
HBASE_FOREVER = 2**31 - 1


def hbase_ttl(ttl_s: int) -> int:
    """The TTL HBase reports for a TableSpec family TTL (0 = forever)."""
    return ttl_s if ttl_s > 0 else HBASE_FOREVER


def ttl_text(ttl_s: int) -> str:
    if ttl_s >= HBASE_FOREVER or ttl_s <= 0:
        return "forever"
    if ttl_s % 86400 == 0:
        return f"{ttl_s}s ({ttl_s // 86400} days)"
    return f"{ttl_s}s"


@dataclass(frozen=True)
class TtlMismatch:
    """A family of an existing table whose TTL is not what the config wants (``current`` None:
    the table lacks the family)."""

    table: str
    family: str
    current: int | None
    wanted: int

    def describe(self) -> str:
        if self.current is None:
            return (f"table {self.table} has no family {self.family} "
                    f"(the config wants it with TTL {ttl_text(self.wanted)})")
        return (f"table {self.table} family {self.family} has TTL {ttl_text(self.current)} but "
                f"the config wants {ttl_text(self.wanted)}")


def ttl_mismatches(conn, specs: list[rowkey.TableSpec]) -> list[TtlMismatch]:
    """The families of the (existing) tables ``specs`` whose TTL differs from the spec's, read
    over Thrift through the happybase connection ``conn`` (one call a table)."""
    out = []
    for spec in specs:
        have = {name.decode().rstrip(":"): desc
                for name, desc in conn.table(spec.name).families().items()}
        for fam, ttl in spec.families:
            current = have[fam]["time_to_live"] if fam in have else None
            if current != hbase_ttl(ttl):
                out.append(TtlMismatch(spec.name, fam, current, hbase_ttl(ttl)))
    return out
