"""Helpers of the batch-layer tests: stage archive rows, load them through the real file sink,
generate whole archive days, and compare published views with ground truth, bucket for bucket."""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path

from schemas.event import parse_rfc3339_ms

GRAN_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


def stage(events: list[dict], directory: Path, first_offset: int = 0, partition: int = 0) -> Path:
    """Write ``events`` (in sending order, one Kafka partition) as archive-format Parquet."""
    import pyarrow.parquet as pq

    from tally.devstack.generator import archive_table

    directory.mkdir(parents=True, exist_ok=True)
    n = len(events)
    offsets = list(range(first_offset, first_offset + n))
    ts = [_ms(e["ts"]) for e in events]
    pq.write_table(archive_table(events, [partition] * n, offsets, ts),
                   directory / f"part-{first_offset:09d}.parquet")
    return directory


def load(spark, cfg, directory: Path) -> int:
    from speed_layer.archive import import_files

    return import_files(spark, cfg, str(directory))


def _ms(ts) -> int:
    return ts if isinstance(ts, int) else parse_rfc3339_ms(ts)


def expected_from_events(events: list[dict]) -> dict[str, dict]:
    """Exact expected buckets per granularity: distinct event_ids, the first copy counting."""
    seen: dict[str, dict] = {}
    for e in events:
        seen.setdefault(e["event_id"], e)
    out: dict[str, dict] = {}
    for g, size in GRAN_MS.items():
        acc: dict = collections.defaultdict(lambda: [0, 0])
        for e in seen.values():
            k = (e["video_id"], e["event_type"], _ms(e["ts"]) // size * size)
            acc[k][0] += 1
            acc[k][1] += e.get("watch_ms", 0)
        out[g] = {k: tuple(v) for k, v in acc.items()}
    return out


def expected_from_truth(truth_path: Path) -> dict[str, dict]:
    """The same from the generator's truth file (per minute, count and watch_ms)."""
    import pyarrow.parquet as pq

    out: dict[str, dict] = {}
    rows = pq.read_table(truth_path).to_pylist()
    for g, size in GRAN_MS.items():
        acc: dict = collections.defaultdict(lambda: [0, 0])
        for r in rows:
            k = (r["video_id"], r["event_type"], int(r["minute"].timestamp() * 1000) // size * size)
            acc[k][0] += r["count"]
            acc[k][1] += r["watch_ms"]
        out[g] = {k: tuple(v) for k, v in acc.items()}
    return out


def published(cfg, days) -> dict[str, dict]:
    """What the published views of ``days`` hold, per granularity."""
    from batch_layer.views import BatchViews

    bv = BatchViews(cfg)
    out: dict[str, dict] = {g: {} for g in GRAN_MS}
    for day in days:
        for g in GRAN_MS:
            table = bv.read_day(str(day), g)
            assert table is not None, f"{day} is not published"
            for r in table.to_pylist():
                key = (r["video_id"], r["event_type"], int(r["bucket_start"].timestamp() * 1000))
                assert key not in out[g], f"bucket {key} published twice"
                out[g][key] = (r["count"], r["watch_ms"])
    return out


def assert_exact(cfg, days, expected: dict[str, dict]) -> dict[str, int]:
    got = published(cfg, days)
    for g in GRAN_MS:
        want = {k: v for k, v in expected[g].items()
                if dt.datetime.fromtimestamp(k[2] / 1000, dt.timezone.utc).date() in set(days)}
        missing = {k: v for k, v in want.items() if got[g].get(k) != v}
        extra = {k: v for k, v in got[g].items() if k not in want}
        assert not missing and not extra, (
            f"{g}: {len(missing)} buckets differ (e.g. {list(missing.items())[:3]} got "
            f"{[got[g].get(k) for k in list(missing)[:3]]}), {len(extra)} unexpected "
            f"(e.g. {list(extra.items())[:3]})")
    return {g: len(got[g]) for g in GRAN_MS}


def generate_archive(inst, tmp_path, spark, seed: int, events: int = 20000, days: int = 2,
                     start: str = "2026-11-20", name: str = "gen"):
    """Generated archive-format days loaded through the file sink; the expected views."""
    staging, truth = tmp_path / f"{name}-staging", tmp_path / f"{name}-truth.parquet"
    inst.generate("--events", str(events), "--videos", "150", "--start", start, "--days", str(days),
                  "--seed", str(seed), "--duplicates", "0.05", "--late", "0.02",
                  "--archive-out", str(staging), "--truth", str(truth))
    load(spark, inst.cfg, staging)
    return expected_from_truth(truth)


def current(inst, day: dt.date) -> dict:
    from batch_layer.catalog import Catalog

    return Catalog(inst.cfg).current(day.isoformat())
