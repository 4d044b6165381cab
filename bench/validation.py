"""What the contract's validation costs per record, isolated from Kafka and the sinks: a cached
DataFrame of Kafka-shaped records (the generator's mix, invalid ones included) read into a no-op
sink as it is (the reference), through the column-expression validator
(schemas.event_spark) and through the JVM validator (schemas.event_jvm).

    python bench/validation.py [--records 500000] [--runs 3] [--invalid 0.01]

Per form: the JVM's CPU time (every thread of the local driver and executors, from
/proc/<pid>/stat) and the wall time of each run after a warm-up run of every form; the
validation's cost per record is (CPU of the form - CPU of the reference) / records. Prints each
run, the medians, and as its last line one JSON object with the medians.
No stack needed: the records are generated in memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.config import load_config  # noqa: E402


def records(n: int, invalid_share: float, seed: int = 7) -> list[tuple]:
    """Kafka-shaped rows (value bytes, broker timestamp) of generated events: mostly valid,
    ``invalid_share`` of them broken the generator's ways."""
    import random

    from tally.devstack.generator import INVALID_KINDS

    rng = random.Random(seed)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    now_ms = int(time.time() * 1000)
    out = []
    for i in range(n):
        ts = now_ms - rng.randrange(0, 3_600_000)
        event = {
            "event_id": f"ev-{seed}-{i}", "video_id": f"vid-{rng.randrange(100_000)}",
            "event_type": rng.choice(("view", "view", "view", "like", "share")),
            "ts": dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "watch_ms": rng.randrange(0, 600_000), "user_id": f"u{rng.randrange(10**6)}",
            "country": rng.choice(("US", "DE", "IN", "BR")),
            "device": rng.choice(("web", "ios", "android"))}
        if rng.random() < invalid_share:
            value = rng.choice(INVALID_KINDS)[1](event)
        else:
            value = json.dumps(event, separators=(",", ":")).encode()
        out.append((None, bytearray(value), "tally.events", i % 6, i, now))
    return out


def cpu_s(spark) -> float:
    """CPU seconds (user + system) the driver's JVM has used: in local mode the executors too."""
    import os

    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(spark, df, form: str, cfg) -> tuple[float, float]:
    """(wall seconds, JVM CPU seconds) of one pass of ``form`` over ``df`` into a no-op sink."""
    from pyspark.sql import functions as F

    from schemas.event_jvm import validate_events_jvm
    from schemas.event_spark import validate_events

    if form == "reference":
        out = df.select(F.col("value"), F.col("timestamp"))
    else:
        validate = validate_events if form == "expressions" else validate_events_jvm
        out = validate(df, "value", "timestamp", cfg.events.types, cfg.events.max_future_ms) \
            .select("error", "event_id", "video_id", "event_type", "ts", "watch_ms")
    c0, t0 = cpu_s(spark), time.perf_counter()
    out.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0, cpu_s(spark) - c0


def main() -> int:
    from adapters.spark import build_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--invalid", type=float, default=0.01)
    args = ap.parse_args()
    cfg = load_config(environ={}, overrides={"state_dir": "/tmp/tally-bench-validation",
                                             "spark": {"master": "local[2]", "driver_memory": "3g",
                                                       "shuffle_partitions": 4}})
    spark = build_session(cfg, "tally-bench-validation")
    try:
        print(f"generating {args.records:,} records ({args.invalid:.0%} invalid)", file=sys.stderr)
        df = spark.createDataFrame(records(args.records, args.invalid),
                                   "key binary, value binary, topic string, partition int, "
                                   "offset long, timestamp timestamp").repartition(4).cache()
        df.count()
        forms = ("reference", "expressions", "jvm")
        for form in forms:  # warm-up: JIT, codegen, the UDF's class
            run(spark, df, form, cfg)
        got: dict[str, list[tuple[float, float]]] = {f: [] for f in forms}
        for r in range(args.runs):
            for form in forms:
                got[form].append(run(spark, df, form, cfg))
                wall, cpu = got[form][-1]
                print(f"run {r + 1}: {form:<12} {args.records / wall:>12,.0f} records/s  "
                      f"wall {wall:6.2f} s  JVM CPU {cpu:6.2f} s", file=sys.stderr)
        med = {f: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
               for f, v in got.items()}
        us = {f: (med[f][1] - med["reference"][1]) / args.records * 1e6 for f in forms[1:]}
        result = {
            "records": args.records, "runs": args.runs,
            "reference_rps": round(args.records / med["reference"][0]),
            "expressions_rps": round(args.records / med["expressions"][0]),
            "jvm_rps": round(args.records / med["jvm"][0]),
            "expressions_us": round(us["expressions"], 3), "jvm_us": round(us["jvm"], 3),
            "jvm_vs_expressions": round(us["expressions"] / us["jvm"], 2) if us["jvm"] > 0 else None,
        }
        print(f"medians: validation {result['expressions_us']} us/record (column expressions), "
              f"{result['jvm_us']} us/record (JVM), {result['jvm_vs_expressions']}x less",
              file=sys.stderr)
        print(json.dumps(result))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
