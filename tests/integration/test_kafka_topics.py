"""The events topic keeps the broker's clock: created with message.timestamp.type=LogAppendTime,
an existing one without it altered by provision.create_topics (what `tally stack up` runs), and a
record sent with an old producer timestamp is read back stamped with its append time."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from adapters.producer import TallyProducer
from tally.devstack import provision

DAY_MS = 86_400_000


def events_cfg(stack, unique):
    return stack.replace(kafka={"topic": f"test.ts.{unique}", "dlq_topic": f"test.ts.{unique}.dlq",
                                "partitions": 2})


def timestamp_type(cfg, topic: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers)
    try:
        key = "message.timestamp.type"
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, [key])],
                                     config_filter="all")
    finally:
        admin.close()
    return res["topic"][topic][key]["value"]


def send_old_and_read_back(cfg) -> tuple[int, list, list[int]]:
    """Send 8 records stamped 10 days ago by the producer; return that stamp, the records as a
    consumer reads them back and the timestamps of the producer's acknowledgements."""
    start = provision.end_offsets(cfg)  # read only what is sent here
    old = int(time.time() * 1000) - 10 * DAY_MS
    with TallyProducer(cfg) as producer:
        futures = [producer.send_raw(b'{"replay": %d}' % i, b"key-%d" % i, timestamp_ms=old)
                   for i in range(8)]
        assert producer.flush() == len(futures)
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, group_id=None,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(cfg.kafka.topic, p) for p in range(cfg.kafka.partitions)]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, start.get(tp.partition, 0))
        records: list = []
        deadline = time.monotonic() + 30
        while len(records) < len(futures) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert len(records) == len(futures)
    return old, records, [f.get(timeout=10).timestamp for f in futures]


def assert_append_time(old: int, records: list, acked: list[int]) -> None:
    now = time.time() * 1000
    for r in records:
        assert r.timestamp_type == 1, r  # 1: LogAppendTime
        assert abs(r.timestamp - now) < 60_000 and r.timestamp - old > 9 * DAY_MS, (r, now)
    # The producer's acknowledgements carry the broker's time as well.
    assert all(abs(ts - now) < 60_000 for ts in acked), acked


def test_a_fresh_events_topic_has_log_append_time(stack, unique):
    cfg = events_cfg(stack, unique)
    assert sorted(provision.create_topics(cfg)) == sorted([cfg.kafka.topic, cfg.kafka.dlq_topic])
    assert timestamp_type(cfg, cfg.kafka.topic) == "LogAppendTime"
    assert_append_time(*send_old_and_read_back(cfg))


def test_an_existing_events_topic_without_it_is_altered(stack, unique, capsys):
    cfg = events_cfg(stack, unique)
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(cfg.kafka.topic, cfg.kafka.partitions, 1,
                                      topic_configs={"retention.ms": "-1"})], timeout_ms=15000)
    finally:
        admin.close()
    assert timestamp_type(cfg, cfg.kafka.topic) == "CreateTime"
    # Before the alter a producer's stamp is what the broker stores.
    old, records, acked = send_old_and_read_back(cfg)
    assert {r.timestamp for r in records} == {old} and {r.timestamp_type for r in records} == {0}

    capsys.readouterr()
    assert provision.create_topics(cfg) == [cfg.kafka.dlq_topic]  # the events topic is not new
    err = capsys.readouterr().err
    assert (f"topic {cfg.kafka.topic}: message.timestamp.type CreateTime -> LogAppendTime"
            in err), err
    assert timestamp_type(cfg, cfg.kafka.topic) == "LogAppendTime"
    # Only that key changed: the topic's own retention stays.
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers)
    try:
        desc = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, cfg.kafka.topic)])
    finally:
        admin.close()
    assert desc["topic"][cfg.kafka.topic]["retention.ms"]["value"] == "-1"

    # From now on the broker stamps what it appends, whatever the producer says.
    assert_append_time(*send_old_and_read_back(cfg))

    # In line now: nothing more to do, and nothing printed.
    capsys.readouterr()
    assert provision.create_topics(cfg) == []
    assert "timestamp.type" not in capsys.readouterr().err
