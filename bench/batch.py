"""Batch-layer benchmark: this project's Spark job against DuckDB doing the same work on the same
raw Parquet, in the same script.

    python bench/batch.py [--events 20000000] [--runs 3] [--videos 20000] [--work DIR]

Needs the local stack's Kafka (`tally stack up`): the job asks it whether the day is closed.

Builds (once, kept in --work) one UTC day of generated traffic with 3 % retries as archive rows,
loaded into a file:// archive through Spark's file sink (`tally archive import`). Then, per run:

* Spark: `batch_layer.job.run_day` — the whole nightly job: read the day through the sink log,
  dedup by event_id (the first copy written to Kafka), minute/hour/day count and watch_ms,
  write the versioned views, read them back and verify, publish; with its stages (compute,
  write, verify) reported.
* DuckDB: the same dedup (arg_min over the Kafka position) and the same three views from the
  same files, written as Parquet.

Prints each run, the medians, events/s per core and the ratio Spark/DuckDB. Goal (issue 4): the
Spark job within 5x of DuckDB on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.config import load_config  # noqa: E402

DAY = "2026-11-20"


def build_archive(cfg, spark, events: int, videos: int, work: Path) -> None:
    from speed_layer.archive import import_files
    from tally.devstack.generator import GeneratorOptions, build_traffic, write_archive_rows

    marker = archive_marker(work, events, videos)
    if marker.exists():
        print(f"archive: reusing {work}")
        return
    staging = work / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    t0 = time.perf_counter()
    traffic = build_traffic(cfg, GeneratorOptions(events=events, videos=videos, start=DAY, days=1,
                                                  seed=7, duplicates=0.03))
    rows = write_archive_rows(cfg, traffic, str(staging), chunk=1_000_000)
    print(f"archive: generated {rows:,} rows in {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    import_files(spark, cfg, str(staging))
    print(f"archive: loaded through the file sink in {time.perf_counter() - t0:.0f}s")
    shutil.rmtree(staging)
    marker.touch()


def archive_marker(work: Path, events: int, videos: int) -> Path:
    return work / f"archive-{events}-{videos}.ok"


def spark_run(spark, cfg):
    import datetime as dt

    from batch_layer.job import run_day

    t0 = time.perf_counter()
    r = run_day(spark, cfg, dt.date.fromisoformat(DAY))
    assert r.published, r.reason
    return time.perf_counter() - t0, r


def duckdb_run(files: list[str], out: Path, threads: int) -> tuple[float, int]:
    import duckdb

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    t0 = time.perf_counter()
    file_list = "[" + ",".join(f"'{f}'" for f in files) + "]"
    con.execute(f"""
        CREATE TEMP TABLE distinct_events AS
        SELECT event_id,
               arg_min(struct_pack(video_id, event_type, ts, watch_ms := coalesce(watch_ms, 0)),
                       kafka_partition::BIGINT * 1099511627776 + kafka_offset) AS e
        FROM read_parquet({file_list}) GROUP BY event_id""")
    con.execute("""
        CREATE TEMP TABLE minute AS
        SELECT e.video_id AS video_id, e.event_type AS event_type,
               date_trunc('minute', e.ts) AS bucket_start, count(*) AS count,
               sum(e.watch_ms)::BIGINT AS watch_ms
        FROM distinct_events GROUP BY ALL""")
    for g in ("minute", "hour", "day"):
        src = "minute" if g == "minute" else (
            f"(SELECT video_id, event_type, date_trunc('{g}', bucket_start) AS bucket_start, "
            f"sum(count)::BIGINT AS count, sum(watch_ms)::BIGINT AS watch_ms FROM minute GROUP BY ALL)")
        con.execute(f"COPY (SELECT * FROM {src} ORDER BY video_id, event_type, bucket_start) "
                    f"TO '{out}/{g}.parquet' (FORMAT parquet)")
    elapsed = time.perf_counter() - t0
    n = con.execute("SELECT sum(count) FROM minute").fetchone()[0]
    con.close()
    return elapsed, int(n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--videos", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tally-bench-batch"))
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--prepare-only", action="store_true", help="build the archive and stop")
    args = ap.parse_args()

    from adapters import log
    from adapters.spark import build_session
    from batch_layer.source import day_input

    log.setup("WARNING", quiet=False)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not archive_marker(work, args.events, args.videos).exists():
        # A new archive: a new lake, before the session keeps its scratch in the state directory.
        shutil.rmtree(work / "state", ignore_errors=True)
    # Its own (empty) events topic: the run checks that the archive holds what the topic holds
    # before it calls the day closed, and the benchmark's archive comes from no topic.
    cfg = load_config(overrides={"state_dir": str(work / "state"),
                                 "kafka": {"topic": "tally.bench.batch.events"},
                                 "spark": {"master": f"local[{args.cores}]", "driver_memory": "2g"}})
    spark = build_session(cfg, "tally-bench-batch", with_jars=False)
    try:
        build_archive(cfg, spark, args.events, args.videos, work)
        if args.prepare_only:
            return 0
        import datetime as dt

        inp = day_input(cfg, dt.date.fromisoformat(DAY))
        files = [f.path[len("file://"):] for f in inp.files]
        print(f"input: {len(files)} files, {inp.bytes / 1e6:.0f} MB; {args.cores} cores for both engines")
        spark_times, compute_times, duck_times = [], [], []
        raw_rows = events = 0
        for i in range(args.runs):
            s, r = spark_run(spark, cfg)
            raw_rows, events = r.raw_rows, r.events
            c = r.stages["compute"] + r.stages["write"]
            d, duck_events = duckdb_run(files, work / "duck-out", args.cores)
            assert duck_events == events, (duck_events, events)
            spark_times.append(s)
            compute_times.append(c)
            duck_times.append(d)
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in r.stages.items())
            print(f"run {i + 1}: spark job {s:.1f}s ({stages}), duckdb {d:.1f}s, ratio {s / d:.2f}")
        s, c, d = (statistics.median(x) for x in (spark_times, compute_times, duck_times))
        per_core = lambda t: raw_rows / t / args.cores  # noqa: E731
        print(f"\n{raw_rows:,} raw rows -> {events:,} distinct events, median of {args.runs} runs:")
        print(f"  spark job (all of it)        {s:7.1f}s  {per_core(s):>10,.0f} events/s/core")
        print(f"  spark compute + write        {c:7.1f}s  {per_core(c):>10,.0f} events/s/core")
        print(f"  duckdb (compute + write)     {d:7.1f}s  {per_core(d):>10,.0f} events/s/core")
        print(f"  ratio spark job / duckdb: {s / d:.2f}  (compute + write / duckdb: {c / d:.2f}; goal <= 5)")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
