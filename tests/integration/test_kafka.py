"""Kafka through the Tally producer: acknowledged, keyed by video_id, in the key's partition."""

from __future__ import annotations

import json
import time

import pytest

from adapters.producer import TallyProducer
from schemas.errors import DependencyError, ValidationError
from tally.devstack.provision import create_topics


def consume_all(cfg, topic: str, expected: int, timeout_s: float = 60):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=cfg.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=2000, group_id=None)
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                records.extend(batch)
        # Nothing beyond what was sent may arrive.
        extra = consumer.poll(timeout_ms=1500)
        records.extend(r for batch in extra.values() for r in batch)
    finally:
        consumer.close()
    return records


def test_produce_and_consume_back(stack, unique):
    from kafka.partitioner.default import murmur2

    topic = f"test.kafka.{unique}"
    create_topics(stack, {topic: 6})
    now = int(time.time() * 1000)
    events = [{"event_id": f"k{unique}-{i}", "video_id": f"vid-{i % 37}", "event_type": "view",
               "ts": now - 1000 * i, "watch_ms": i} for i in range(3000)]
    with TallyProducer(stack, topic=topic) as producer:
        for e in events:
            producer.send_event(e)
        assert producer.flush() == len(events)
    records = consume_all(stack, topic, len(events))
    assert len(records) == len(events)
    got = {json.loads(r.value)["event_id"]: r for r in records}
    assert set(got) == {e["event_id"] for e in events}
    for e in events:
        r = got[e["event_id"]]
        assert r.key == e["video_id"].encode()
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 6
    assert len({r.partition for r in records}) == 6


def test_invalid_events_are_refused_before_sending(stack, unique):
    topic = f"test.kafka.invalid.{unique}"
    create_topics(stack, {topic: 1})
    with TallyProducer(stack, topic=topic) as producer:
        with pytest.raises(ValidationError, match="watch_ms: must be between"):
            producer.send_event({"event_id": "a", "video_id": "v", "event_type": "view",
                                 "ts": int(time.time() * 1000), "watch_ms": -3})
        assert producer.sent == 0


def test_unreachable_broker_is_a_reported_error(stack):
    cfg = stack.replace(kafka={"bootstrap_servers": "127.0.0.1:1", "request_timeout_ms": 2000})
    with pytest.raises(DependencyError, match="kafka: cannot connect"):
        TallyProducer(cfg)
