"""``tally demo``: the platform end to end on the local stack.

What runs today (the foundation): the stack is brought up, a few days of generated traffic with
duplicates, late and invalid events goes to Kafka through the producer, with its exact ground
truth written next to it, and the topic is read back to show where the records landed. The
speed, batch and serving layers join this demo as they are built (issues 3-6).
"""

from __future__ import annotations

import datetime as dt
import time

from schemas.config import TallyConfig
from tally import log
from tally.generator import GeneratorOptions, run_generate
from tally.stack import Stack


def topic_end_offsets(cfg: TallyConfig, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def run_demo(cfg: TallyConfig, events: int = 50_000, days: int = 3) -> int:
    t0 = time.monotonic()
    log.progress("demo 1/3: bringing up the local stack")
    Stack(cfg).up()
    today = dt.datetime.now(dt.timezone.utc).date()
    start = (today - dt.timedelta(days=days)).isoformat()  # the last `days` complete UTC days
    demo_dir = cfg.state_path / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    truth = demo_dir / "truth.parquet"
    before = topic_end_offsets(cfg, cfg.kafka.topic)
    log.progress(f"demo 2/3: sending {events:,} events over {days} days from {start} to Kafka "
                 f"(2% duplicates, 1% late, 0.5% invalid); truth -> {truth}")
    summary = run_generate(cfg, GeneratorOptions(events=events, videos=500, start=start, days=days,
                                                 seed=int(time.time()), late=0.01, duplicates=0.02,
                                                 invalid=0.005),
                           truth=str(truth), kafka=True)
    after = topic_end_offsets(cfg, cfg.kafka.topic)
    log.progress("demo 3/3: records per partition of "
                 f"{cfg.kafka.topic} (keyed by video_id):")
    for p, end in sorted(after.items()):
        log.progress(f"  partition {p}: +{end - before.get(p, 0):,}")
    total = sum(after.values()) - sum(before.values())
    print(f"sent {summary['records_sent']:,} records ({summary['valid_distinct']:,} distinct valid "
          f"events, {summary['duplicates']:,} retries, {summary['late']:,} late, "
          f"{summary['invalid']:,} invalid) at {summary['records_per_s']:,.0f} records/s; "
          f"{total:,} landed in Kafka; truth in {truth}")
    print("the speed, batch and serving layers are not part of this build yet (issues 3-6)")
    log.progress(f"demo finished in {time.monotonic() - t0:.0f}s; the stack keeps running "
                 "(`tally stack down` stops it)")
    return 0 if total == summary["records_sent"] else 1
