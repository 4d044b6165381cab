"""Synthetic traffic with its exact ground truth (``tally generate``).

Videos are drawn with Zipf-skewed popularity, event times follow a diurnal shape over the days,
and a seed makes a run reproducible to the byte. Records go out in event-time order, except:

* ``--duplicates``: a copy of an event (same ``event_id``, same content, a client retry) is sent
  within :data:`DUPLICATE_DELAY_MS` of event time after its original;
* ``--late``: an event is held back until the newest event time already sent is at least twice
  the watermark delay past it, so the speed layer must drop it as late;
* ``--invalid``: records that break the contract, cycling through every kind of violation
  (:data:`INVALID_KINDS`), interleaved at random positions.

The truth (``--truth``) counts distinct valid events per (video, event type, minute): ``count``
and ``watch_ms`` over all of them, ``count_ontime`` and ``watch_ms_ontime`` without the late ones.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from schemas.granularity import DAY_MS, MINUTE_MS
from adapters import log
from schemas.config import TallyConfig
from schemas.durations import parse_duration_ms
from schemas.errors import GeneratorError
from schemas.event import MIN_TS_MS, format_ms, to_json

LOG = log.get("generator")

DUPLICATE_DELAY_MS = 5_000
TYPE_WEIGHTS = {"view": 0.80, "like": 0.08, "dislike": 0.01, "share": 0.03, "comment": 0.08}
COUNTRIES = ("US", "IN", "BR", "DE", "JP", "FR", "GB", "ID", "MX", "NG")
DEVICES = ("web", "ios", "android", "tv")


def _break(field: str, value: Any) -> Callable[[dict], dict]:
    def f(e: dict) -> dict:
        e = dict(e)
        e[field] = value
        return e
    return f


def _drop(field: str) -> Callable[[dict], dict]:
    def f(e: dict) -> dict:
        return {k: v for k, v in e.items() if k != field}
    return f


# Each kind: (name, function from a valid event dict to the invalid record's bytes).
def _dump(fn: Callable[[dict], Any]) -> Callable[[dict], bytes]:
    return lambda e: json.dumps(fn(e), separators=(",", ":"), ensure_ascii=False).encode()


INVALID_KINDS: tuple[tuple[str, Callable[[dict], bytes]], ...] = (
    ("not_json", lambda e: to_json(e)[:-7]),
    ("json_array", lambda e: b"[" + to_json(e) + b"]"),
    ("json_string", lambda e: b'"just a string"'),
    ("bad_utf8", lambda e: to_json(e)[:-2] + b'\xff\xfe"}'),
    ("duplicate_key", lambda e: to_json(e)[:-1] + b',"video_id":"other"}'),
    ("missing_event_id", _dump(_drop("event_id"))),
    ("null_event_id", _dump(_break("event_id", None))),
    ("event_id_chars", _dump(_break("event_id", "bad id!"))),
    ("event_id_too_long", _dump(_break("event_id", "e" * 65))),
    ("missing_video_id", _dump(_drop("video_id"))),
    ("video_id_unicode", _dump(_break("video_id", "vidéo-1"))),
    ("video_id_empty", _dump(_break("video_id", ""))),
    ("video_id_number", _dump(_break("video_id", 12345))),
    ("event_type_unknown", _dump(_break("event_type", "purchase"))),
    ("missing_ts", _dump(_drop("ts"))),
    ("ts_not_a_time", _dump(_break("ts", "yesterday"))),
    ("ts_no_offset", _dump(_break("ts", "2026-11-27T10:15:00"))),
    ("ts_bad_date", _dump(_break("ts", "2026-02-30T10:15:00Z"))),
    ("ts_boolean", _dump(_break("ts", True))),
    ("ts_float", _dump(_break("ts", 1.7e12))),
    ("ts_ancient", _dump(_break("ts", "1999-12-31T23:59:59.999Z"))),
    ("ts_future", _dump(_break("ts", "2099-01-01T00:00:00Z"))),
    ("watch_ms_negative", _dump(_break("watch_ms", -1))),
    ("watch_ms_too_large", _dump(_break("watch_ms", 86_400_001))),
    ("watch_ms_string", _dump(_break("watch_ms", "100"))),
    ("watch_ms_fraction", _dump(_break("watch_ms", 1.5))),
    ("user_id_too_long", _dump(_break("user_id", "u" * 65))),
    ("country_huge", _dump(_break("country", "X" * 10_000))),
    ("schema_version_string", _dump(_break("schema_version", "2"))),
    ("schema_version_zero", _dump(_break("schema_version", 0))),
)


@dataclass(frozen=True)
class GeneratorOptions:
    events: int
    videos: int
    start: str
    days: int = 1
    seed: int = 1
    late: float = 0.0
    duplicates: float = 0.0
    invalid: float = 0.0
    watermark_ms: int | None = None
    zipf_s: float = 1.1
    # Retries re-stamped by the client: a copy carries its original's ts plus 1..restamp_ms ms
    # (0: copies carry the original's ts). Across midnight the copy falls on the next day.
    restamp_ms: int = 0

    def validate(self) -> None:
        if self.events < 1:
            raise GeneratorError("--events: must be at least 1")
        if self.videos < 1:
            raise GeneratorError("--videos: must be at least 1")
        if self.days < 1:
            raise GeneratorError("--days: must be at least 1")
        for name in ("late", "duplicates", "invalid"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise GeneratorError(f"--{name}: must be a fraction between 0 and 1")
        if self.late + self.duplicates > 1.0:
            raise GeneratorError("--late plus --duplicates: must not exceed 1")
        if self.restamp_ms < 0:
            raise GeneratorError("--restamp-ms: must be >= 0")


def parse_start(text: str) -> int:
    """Epoch ms of ``--start``: a UTC day ``YYYY-MM-DD`` or an RFC 3339 instant."""
    from schemas.event import parse_rfc3339_ms

    try:
        d = dt.date.fromisoformat(text)
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    except ValueError:
        pass
    ms = parse_rfc3339_ms(text)
    if ms is None:
        raise GeneratorError(f"--start: must be YYYY-MM-DD or RFC 3339 with an offset, got {text!r}")
    return ms


def video_ids(n: int) -> list[str]:
    return [f"vid-{i:06d}" for i in range(n)]


class Traffic:
    """The generated traffic of one set of options, fully in memory, column-wise."""

    def __init__(self, opts: GeneratorOptions, event_types: tuple[str, ...], watermark_ms: int):
        opts.validate()
        self.opts = opts
        self.event_types = event_types
        self.watermark_ms = watermark_ms
        rng = np.random.default_rng(opts.seed)
        n = opts.events
        start_ms = parse_start(opts.start)
        self.start_ms = start_ms
        self.end_ms = start_ms + opts.days * DAY_MS

        # Popularity: Zipf over videos; event types with a realistic mix.
        ranks = np.arange(1, opts.videos + 1, dtype=np.float64)
        pop = 1.0 / ranks ** opts.zipf_s
        self.videos = video_ids(opts.videos)
        self.video_idx = rng.choice(opts.videos, size=n, p=pop / pop.sum())
        w = np.array([TYPE_WEIGHTS.get(t, 0.02) for t in event_types])
        self.type_idx = rng.choice(len(event_types), size=n, p=w / w.sum())

        # Diurnal shape: busiest around 20:00 UTC, quietest around 08:00.
        minutes = opts.days * 1440
        minute_of_day = np.arange(minutes) % 1440
        shape = 1.0 + 0.6 * np.cos(2 * np.pi * (minute_of_day - 1200) / 1440)
        minute = rng.choice(minutes, size=n, p=shape / shape.sum())
        ts = start_ms + minute.astype(np.int64) * MINUTE_MS + rng.integers(0, MINUTE_MS, size=n)
        self.ts = np.sort(ts)  # event i is the i-th in time; the sort keeps ids in time order
        is_view = np.array(event_types)[self.type_idx] == "view"
        watch = np.minimum(rng.lognormal(10.0, 1.2, size=n), 86_400_000).astype(np.int64)
        self.watch_ms = np.where(is_view, watch, -1)  # -1: field absent
        self.has_user = rng.random(n) < 0.9
        self.user = rng.integers(0, 1_000_000, size=n)
        self.country = rng.integers(0, len(COUNTRIES), size=n)
        self.device = rng.integers(0, len(DEVICES), size=n)

        # Late and duplicated events, chosen without overlap.
        order = rng.permutation(n)
        n_late = int(round(opts.late * n))
        n_dup = int(round(opts.duplicates * n))
        late_pick = order[:n_late]
        dup_pick = order[n_late:n_late + n_dup]
        # A late event is sent right after the first event at least 2 watermarks (plus up to one
        # more, at random) past it; one with no such event stays on time.
        send_key = self.ts.copy()
        target = self.ts[late_pick] + 2 * watermark_ms + rng.integers(0, max(watermark_ms, 1), size=n_late)
        j = np.searchsorted(self.ts, target, side="left")
        has_slot = j < n
        late_pick = late_pick[has_slot]
        send_key[late_pick] = self.ts[j[has_slot]]
        dup_key = self.ts[dup_pick] + rng.integers(0, DUPLICATE_DELAY_MS, size=n_dup)
        # A re-stamped retry is stamped later than its original and sent once that time is due.
        self.restamp = np.zeros(n, np.int64)
        if opts.restamp_ms:
            self.restamp[dup_pick] = rng.integers(1, opts.restamp_ms + 1, size=n_dup)
            dup_key = np.maximum(dup_key, self.ts[dup_pick] + self.restamp[dup_pick])

        n_inv = int(round(opts.invalid * n))
        inv_key = rng.integers(start_ms, self.end_ms, size=n_inv)
        self.invalid_kind = np.arange(n_inv) % len(INVALID_KINDS)
        self.invalid_base = rng.integers(0, n, size=n_inv)

        # The sending order: by send key; at equal keys on-time originals first, then late ones,
        # retries and invalid records. kind: 0 original, 1 duplicate, 2 invalid.
        keys = np.concatenate([send_key, dup_key, inv_key])
        kinds = np.concatenate([np.zeros(n, np.int8), np.ones(n_dup, np.int8),
                                np.full(n_inv, 2, np.int8)])
        rank = kinds.copy()
        rank[late_pick] = 1
        idx = np.concatenate([np.arange(n), dup_pick, np.arange(n_inv)])
        perm = np.lexsort((idx, rank, keys))
        self.send_kind = kinds[perm]
        self.send_idx = idx[perm]

        # A late pick is late only if, when it is sent, the newest event time already sent is at
        # least twice the watermark past it; otherwise (the end of the range) it counts on time.
        sent_ts = np.where(self.send_kind == 2, np.iinfo(np.int64).min,
                           self.ts[np.where(self.send_kind == 2, 0, self.send_idx)])
        newest_before = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], sent_ts[:-1]]))
        late_mask = np.zeros(n, bool)
        originals = self.send_kind == 0
        behind = newest_before[originals] - self.ts[self.send_idx[originals]]
        late_mask[self.send_idx[originals]] = behind >= 2 * watermark_ms
        in_pick = np.zeros(n, bool)
        in_pick[late_pick] = True
        self.late = late_mask & in_pick
        self.duplicated = np.zeros(n, bool)
        self.duplicated[dup_pick] = True
        self.n_dup, self.n_inv = n_dup, n_inv

    # Records ---------------------------------------------------------------------------------
    def event(self, i: int, retry: bool = False) -> dict[str, Any]:
        """Event ``i``; ``retry``: its client retry's copy (re-stamped with ``restamp_ms``)."""
        vid = self.videos[self.video_idx[i]]
        ts = int(self.ts[i] + (self.restamp[i] if retry else 0))
        e: dict[str, Any] = {
            "event_id": f"e{self.opts.seed}-{i:09d}",
            "video_id": vid,
            "event_type": self.event_types[self.type_idx[i]],
            # Alternate the two forms the contract allows.
            "ts": format_ms(ts) if i % 2 == 0 else ts,
        }
        if self.watch_ms[i] >= 0:
            e["watch_ms"] = int(self.watch_ms[i])
        if self.has_user[i]:
            e["user_id"] = f"u{self.user[i]}"
        e["country"] = COUNTRIES[self.country[i]]
        e["device"] = DEVICES[self.device[i]]
        return e

    def invalid_record(self, j: int) -> tuple[bytes, bytes | None]:
        base = self.event(int(self.invalid_base[j]))
        base["event_id"] = f"x{self.opts.seed}-{j:09d}"
        kind = INVALID_KINDS[self.invalid_kind[j]]
        return kind[1](base), base["video_id"].encode()

    def records(self) -> Iterator[tuple[int, int, bytes, bytes | None]]:
        """(kind, index, value, key) in sending order; kind 0 event, 1 duplicate, 2 invalid."""
        for kind, i in zip(self.send_kind.tolist(), self.send_idx.tolist()):
            if kind == 2:
                value, key = self.invalid_record(i)
            else:
                e = self.event(i, retry=kind == 1)
                value, key = to_json(e), e["video_id"].encode()
            yield kind, i, value, key

    def __len__(self) -> int:
        return len(self.send_kind)

    # Truth -----------------------------------------------------------------------------------
    def truth_table(self):
        """The exact expected counts per (video, event type, minute) as an Arrow table: one per
        distinct event, at its original's time. By the contract's rule that is the copy that
        counts: within a day the copy first written (the original is sent before its retry),
        across days the earlier day's (a re-stamped retry is never earlier than its original)."""
        import pyarrow as pa

        minute = self.ts // MINUTE_MS * MINUTE_MS
        watch = np.maximum(self.watch_ms, 0)
        ontime = ~self.late
        # Group by a composite integer key: (video, type, minute).
        n_types = len(self.event_types)
        key = (self.video_idx.astype(np.int64) * n_types + self.type_idx) * (
            (self.end_ms - self.start_ms) // MINUTE_MS + 1) + (minute - self.start_ms) // MINUTE_MS
        uniq, inverse = np.unique(key, return_inverse=True)
        count = np.bincount(inverse, minlength=len(uniq)).astype(np.int64)
        watch_sum = np.bincount(inverse, weights=watch, minlength=len(uniq))
        count_on = np.bincount(inverse, weights=ontime, minlength=len(uniq)).astype(np.int64)
        watch_on = np.bincount(inverse, weights=watch * ontime, minlength=len(uniq))
        first = np.zeros(len(uniq), np.int64)
        first[inverse[::-1]] = np.arange(len(key))[::-1]
        return pa.table({
            "video_id": pa.array([self.videos[v] for v in self.video_idx[first]], pa.string()),
            "event_type": pa.array([self.event_types[t] for t in self.type_idx[first]], pa.string()),
            "minute": pa.array(minute[first], pa.timestamp("ms", tz="UTC")),
            "count": pa.array(count, pa.int64()),
            "watch_ms": pa.array(np.rint(watch_sum).astype(np.int64), pa.int64()),
            "count_ontime": pa.array(count_on, pa.int64()),
            "watch_ms_ontime": pa.array(np.rint(watch_on).astype(np.int64), pa.int64()),
        }).sort_by([("video_id", "ascending"), ("event_type", "ascending"), ("minute", "ascending")])


TRUTH_COLUMNS = ("video_id", "event_type", "minute", "count", "watch_ms", "count_ontime",
                 "watch_ms_ontime")


def build_traffic(cfg: TallyConfig, opts: GeneratorOptions) -> Traffic:
    watermark = (opts.watermark_ms if opts.watermark_ms is not None
                 else parse_duration_ms(cfg.stream.watermark))
    traffic = Traffic(opts, cfg.events.types, watermark)
    now = int(time.time() * 1000)
    if traffic.end_ms - 1 > now + cfg.events.max_future_ms:
        raise GeneratorError("--start/--days: the range ends more than the allowed skew after now; "
                             "its events would be rejected as future events")
    if traffic.start_ms < MIN_TS_MS:
        raise GeneratorError("--start: must not be before 2000-01-01")
    return traffic


def run_generate(cfg: TallyConfig, opts: GeneratorOptions, truth: str | None = None,
                 out: str | None = None, kafka: bool = False, rate: float = 0.0,
                 topic: str | None = None, archive_out: str | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    traffic = build_traffic(cfg, opts)
    if truth:
        import pyarrow.parquet as pq

        pq.write_table(traffic.truth_table(), truth)
    sent = 0
    if out or kafka:
        sent = _emit(cfg, traffic, out=out, kafka=kafka, rate=rate, topic=topic)
    elif archive_out:
        sent = write_archive_rows(cfg, traffic, archive_out)
    elapsed = time.monotonic() - t0
    return {
        "valid_distinct": opts.events,
        "duplicates": traffic.n_dup,
        "late": int(traffic.late.sum()),
        "invalid": traffic.n_inv,
        "records_sent": sent,
        "first_ts": format_ms(int(traffic.ts[0])),
        "last_ts": format_ms(int(traffic.ts[-1])),
        "seconds": round(elapsed, 2),
        "records_per_s": round(sent / elapsed, 1) if sent and elapsed > 0 else 0,
    }


def _emit(cfg: TallyConfig, traffic: Traffic, out: str | None, kafka: bool, rate: float,
          topic: str | None) -> int:
    from tqdm import tqdm

    bar = tqdm(total=len(traffic), unit="rec", unit_scale=True, mininterval=1.0,
               disable=log._QUIET, desc="kafka" if kafka else "write", leave=False)
    producer = None
    fh = None
    sent = 0
    t_start = time.monotonic()
    step = 1000 if rate <= 0 else max(1, min(1000, int(rate // 20)))
    try:
        if kafka:
            from adapters.producer import TallyProducer

            producer = TallyProducer(cfg, topic=topic)
        else:
            fh = open(out, "wb")  # type: ignore[arg-type]
        for _kind, _i, value, key in traffic.records():
            if producer is not None:
                producer.send_raw(value, key)
            else:
                fh.write(value + b"\n")  # type: ignore[union-attr]
            sent += 1
            if sent % step == 0:
                bar.update(step)
                if rate > 0:
                    ahead = sent / rate - (time.monotonic() - t_start)
                    if ahead > 0:
                        time.sleep(ahead)
        bar.update(sent % step)
        if producer is not None:
            producer.close()
            producer = None
    finally:
        bar.close()
        if fh is not None:
            fh.close()
        if producer is not None:
            producer.close(timeout_s=5)
    return sent


def archive_table(events: list[dict[str, Any]], partition, offset, kafka_ts_ms):
    """Events (dicts as sent) as an Arrow table of archive rows, without the partition columns,
    as if they had been read from Kafka at the given partitions, offsets and timestamps."""
    import pyarrow as pa

    from schemas.archive import ARCHIVE_COLUMNS, ARCHIVE_PARTITION_COLUMNS, arrow_schema
    from schemas.event import parse_rfc3339_ms

    columns = tuple(c for c in ARCHIVE_COLUMNS if c.name not in ARCHIVE_PARTITION_COLUMNS)
    parsed = [e["ts"] if isinstance(e["ts"], int) else parse_rfc3339_ms(e["ts"]) for e in events]
    cols: dict[str, Any] = {
        "event_id": [e["event_id"] for e in events],
        "video_id": [e["video_id"] for e in events],
        "event_type": [e["event_type"] for e in events],
        "ts": pa.array(np.asarray(parsed, np.int64) * 1000, pa.timestamp("us", tz="UTC")),
        "watch_ms": [e.get("watch_ms") for e in events],
        "user_id": [e.get("user_id") for e in events],
        "country": [e.get("country") for e in events],
        "device": [e.get("device") for e in events],
        "schema_version": [e.get("schema_version", 1) for e in events],
        "json": [to_json(e).decode() for e in events],
        "kafka_partition": np.asarray(partition, np.int32),
        "kafka_offset": np.asarray(offset, np.int64),
        "kafka_timestamp": pa.array(np.asarray(kafka_ts_ms, np.int64) * 1000, pa.timestamp("us", tz="UTC")),
    }
    return pa.table({c.name: cols[c.name] for c in columns}, schema=arrow_schema(columns))


def write_archive_rows(cfg: TallyConfig, traffic: Traffic, out_dir: str,
                       chunk: int = 500_000) -> int:
    """The valid records of ``traffic`` (retries included, in sending order) as Parquet files in
    the raw archive's row format, as if they had gone through Kafka (partition by the producer's
    key hash, offsets in order per partition, the send key as the Kafka timestamp).

    This is staging input for ``tally archive import``, which writes it into the archive through
    Spark's file sink: a fast way to build large archives for the batch layer's tests and
    benchmark without the streaming job.
    """
    import os

    import pyarrow.parquet as pq
    from kafka.partitioner.default import murmur2
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    parts = cfg.kafka.partitions
    video_part = np.array([(murmur2(v.encode()) & 0x7FFFFFFF) % parts for v in traffic.videos])
    valid = traffic.send_kind != 2
    idx = traffic.send_idx[valid]
    part = video_part[traffic.video_idx[idx]]
    # The offset of each record: its rank among the records of its partition, in sending order.
    offset = np.empty(len(idx), np.int64)
    for p in range(parts):
        at = np.flatnonzero(part == p)
        offset[at] = np.arange(len(at))
    retry = traffic.send_kind[valid] == 1
    kafka_ts = traffic.ts[idx] + np.where(retry, traffic.restamp[idx], 0)
    written = 0
    bar = tqdm(total=len(idx), unit="rec", unit_scale=True, mininterval=1.0, disable=log._QUIET,
               desc="archive rows", leave=False)
    try:
        for n, lo in enumerate(range(0, len(idx), chunk)):
            hi = min(lo + chunk, len(idx))
            table = archive_table([traffic.event(int(i), bool(r)) for i, r in zip(idx[lo:hi], retry[lo:hi])],
                                  part[lo:hi],
                                  offset[lo:hi], kafka_ts[lo:hi])
            pq.write_table(table, os.path.join(out_dir, f"part-{n:05d}.parquet"))
            written += hi - lo
            bar.update(hi - lo)
    finally:
        bar.close()
    return written
