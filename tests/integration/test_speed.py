"""The speed layer against ground truth, on the real stack: Kafka -> Spark -> HBase, the raw
archive (file:// and the S3 endpoint) and the dead-letter topic."""

from __future__ import annotations

import collections

import pytest

from tests.integration.speedkit import (
    compare_with_truth, dlq_records, expected_archive_and_dlq, hbase_minutes, make_installation,
    read_archive, read_truth, sent_records, wait_exit,
)

GEN = ["--events", "50000", "--videos", "400", "--start", "2026-11-20", "--days", "3", "--seed", "17",
       "--late", "0.01", "--duplicates", "0.03", "--invalid", "0.01"]


@pytest.fixture(scope="module")
def spark_reader(tmp_path_factory):
    from schemas.config import load_config
    from tally.spark import build_session

    cfg = load_config(overrides={"state_dir": str(tmp_path_factory.mktemp("reader")),
                                 "spark": {"master": "local[1]", "driver_memory": "1g"}})
    spark = build_session(cfg, "tally-test-reader")
    yield spark
    spark.stop()


@pytest.mark.parametrize("lake", ["file", "s3"])
def test_ground_truth(stack, tmp_path, unique, lake, spark_reader):
    # Three days go out in ~20 s, so a micro-batch spans hours of event time; a watermark of two
    # hours (late events go 4-6 hours behind) makes the speed layer drop some of them as late.
    inst = make_installation(stack, tmp_path, unique, lake=lake, TALLY_STREAM__WATERMARK="2 hours")
    truth_path, out_path = tmp_path / "truth.parquet", tmp_path / "sent.jsonl"
    # The exact records, to know what the archive and the dead-letter topic must hold.
    inst.tally("generate", *GEN, "--out", str(out_path))
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "5s", "--until-idle", "25")
    inst.wait_for_log("stream: queries speed")
    # Spread over ~20 s, so the watermark advances between micro-batches and drops late events.
    inst.tally("generate", *GEN, "--truth", str(truth_path), "--kafka", "--rate", "2500")
    assert wait_exit(stream, 600, inst) == 0, inst.stream_log()

    from speed_layer.store import HBaseSpeedStore

    progress = HBaseSpeedStore(inst.cfg).read_progress()
    assert progress is not None, inst.stream_log()
    figures = compare_with_truth(read_truth(truth_path), hbase_minutes(inst.cfg),
                                 progress["dropped_late"])
    print(f"speed vs truth ({lake}): {figures}")
    assert figures["dropped_late"] > 0, "no event was dropped as late: the accounting went untested"

    lines = sent_records(out_path)
    valid_ids, invalid = expected_archive_and_dlq(lines)
    archive = read_archive(spark_reader, inst.cfg)
    archived = collections.Counter(r["event_id"] for r in archive.select("event_id").collect())
    assert archived == valid_ids  # every valid record, duplicates included, nothing else
    assert archive.select("kafka_partition", "kafka_offset").distinct().count() == sum(valid_ids.values())
    # Late events land in their event-time partition.
    bad_partition = archive.where("event_date != to_date(ts) OR event_hour != hour(ts)").count()
    assert bad_partition == 0

    dlq = dlq_records(inst.cfg, len(invalid))
    assert sorted(r.value for r in dlq) == sorted(raw for raw, _ in invalid)
    reasons = {raw: reason for raw, reason in invalid}
    for r in dlq:
        headers = dict(r.headers)
        assert headers["tally.error"].decode() == reasons[r.value]
        topic, part, offset = headers["tally.source"].decode().rsplit("/", 2)
        assert topic == inst.cfg.kafka.topic and int(part) >= 0 and int(offset) >= 0
