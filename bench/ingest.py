"""Ingest benchmark: acknowledged events/s through the Tally producer, against kafka-python
sending the same pre-serialised bytes with the same settings (the reference), in one run.

    python bench/ingest.py [--events 1000000] [--runs 3]

Needs the local stack (`tally stack up`). Each run writes to a fresh topic with the configured
partition count. Prints each run, the medians and the ratio Tally / reference.
Goals (issue 2): >= 20,000 events/s and >= 0.8 of the reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.producer import TallyProducer, producer_settings  # noqa: E402
from schemas.config import load_config  # noqa: E402
from schemas.event import to_json  # noqa: E402
from tally.devstack.generator import GeneratorOptions, Traffic  # noqa: E402
from tally.devstack.provision import create_topics  # noqa: E402


def make_events(n: int) -> list[dict]:
    traffic = Traffic(GeneratorOptions(events=n, videos=10_000, start="2026-11-01", days=7, seed=42),
                      ("view", "like", "dislike", "share", "comment"), 600_000)
    events = []
    for i in range(n):
        e = traffic.event(i)
        e["user_id"] = f"user-{traffic.user[i]:012d}"  # ~200 bytes an event
        events.append(e)
    return events


def run_tally(cfg, events: list[dict]) -> float:
    topic = f"bench.ingest.{uuid.uuid4().hex[:8]}"
    create_topics(cfg, {topic: cfg.kafka.partitions})
    t0 = time.perf_counter()
    producer = TallyProducer(cfg, topic=topic)
    for e in events:
        producer.send_event(e)
    acked = producer.close()
    elapsed = time.perf_counter() - t0
    assert acked == len(events), (acked, len(events))
    return len(events) / elapsed


def run_reference(cfg, payloads: list[tuple[bytes, bytes]]) -> float:
    from kafka import KafkaProducer

    topic = f"bench.ref.{uuid.uuid4().hex[:8]}"
    create_topics(cfg, {topic: cfg.kafka.partitions})
    # The leanest correct use of kafka-python: send, flush, then check every future.
    t0 = time.perf_counter()
    producer = KafkaProducer(**producer_settings(cfg, client_id="bench-reference"))
    futures = [producer.send(topic, value=value, key=key) for key, value in payloads]
    producer.flush()
    producer.close()
    elapsed = time.perf_counter() - t0
    acked = sum(1 for f in futures if f.succeeded())
    assert acked == len(payloads), (acked, len(payloads))
    return len(payloads) / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config()
    print(f"preparing {args.events:,} events ...", flush=True)
    events = make_events(args.events)
    payloads = [(e["video_id"].encode(), to_json(e)) for e in events]
    size = statistics.mean(len(v) for _, v in payloads[:10_000])
    print(f"mean event size {size:.0f} bytes; compression={cfg.kafka.compression}, "
          f"linger_ms={cfg.kafka.linger_ms}, batch_size={cfg.kafka.batch_size}, acks=all, idempotent")
    tally_rates, ref_rates = [], []
    for r in range(args.runs):
        # Alternate the order so that neither side always runs on a warmer broker.
        for name in (("tally", "reference") if r % 2 == 0 else ("reference", "tally")):
            if name == "tally":
                tally_rates.append(run_tally(cfg, events))
                print(f"run {r + 1}: tally producer   {tally_rates[-1]:>10,.0f} events/s", flush=True)
            else:
                ref_rates.append(run_reference(cfg, payloads))
                print(f"run {r + 1}: kafka-python ref {ref_rates[-1]:>10,.0f} events/s", flush=True)
    t, ref = statistics.median(tally_rates), statistics.median(ref_rates)
    print(f"median: tally {t:,.0f} events/s, reference {ref:,.0f} events/s, ratio {t / ref:.2f}")
    print(f"goals: >= 20,000 events/s: {'met' if t >= 20_000 else 'NOT met'}; "
          f">= 0.8 of reference: {'met' if t / ref >= 0.8 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
