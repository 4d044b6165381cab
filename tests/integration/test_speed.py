"""The speed layer against ground truth, on the real stack: Kafka -> Spark -> HBase, the raw
archive (file:// and the S3 endpoint) and the dead-letter topic."""

from __future__ import annotations

import collections
import json

import pytest

from schemas.event import to_json
from tests.integration.speedkit import (
    compare_with_truth, dlq_records, expected_archive_and_dlq, hbase_minutes, make_installation,
    read_archive, read_truth, send_very_late, sent_records, stop_when_caught_up,
    wait_for_watermark,
)

GEN = ["--events", "50000", "--videos", "400", "--start", "2026-11-20", "--days", "3", "--seed", "17",
       "--late", "0.01", "--duplicates", "0.03", "--invalid", "0.01"]


@pytest.mark.parametrize("lake", ["file", "s3"])
def test_ground_truth(stack, tmp_path, unique, lake, spark_reader):
    inst = make_installation(stack, tmp_path, unique, lake=lake)
    truth_path, out_path = tmp_path / "truth.parquet", tmp_path / "sent.jsonl"
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "5s")
    # The exact records, to know what the archive and the dead-letter topic must hold (written
    # while the stream's JVM starts).
    inst.generate(*GEN, "--out", str(out_path))
    inst.wait_for_log("stream: queries speed")
    inst.tally("generate", *GEN, "--truth", str(truth_path), "--kafka", "--rate", "5000")
    # Once the watermark has passed the generated days, events of the first day are dropped as
    # late for sure (the generator's own late events may or may not be, depending on how the
    # micro-batches fell): the dropped-late counter must account for them exactly.
    wait_for_watermark(inst, "2026-11-22T23:00")
    very_late = send_very_late(inst, 200, "2026-11-20")
    lines = sent_records(out_path) + [to_json(e) for e in very_late]
    valid_ids, invalid = expected_archive_and_dlq(lines)
    assert stop_when_caught_up(inst, stream, len(invalid)) == 0, inst.stream_log()

    from speed_layer.store import HBaseSpeedStore

    progress = HBaseSpeedStore(inst.cfg).read_progress()
    assert progress is not None, inst.stream_log()
    truth = read_truth(truth_path)
    for e in very_late:
        key = (e["video_id"], "view", e["ts"] // 60_000 * 60_000)
        c, w, co, wo = truth.get(key, (0, 0, 0, 0))
        truth[key] = (c + 1, w + e["watch_ms"], co, wo)
    figures = compare_with_truth(truth, hbase_minutes(inst.cfg), progress["dropped_late"])
    print(f"speed vs truth ({lake}): {figures}")
    assert figures["dropped_late"] >= len(very_late)

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

    # The Lambda promise: the batch layer, reading the archive the stream wrote, counts exactly
    # what the truth says, the events the speed layer dropped as late included.
    import datetime as dt

    from batch_layer.job import run_dates
    from tests.integration.batchkit import assert_exact, expected_from_truth

    days = [dt.date(2026, 11, 20) + dt.timedelta(days=i) for i in range(3)]
    report = run_dates(spark_reader, inst.cfg, days)  # the three days in one run
    assert [(r.day, r.published) for r in report.results] == [(d.isoformat(), True) for d in days], \
        report.lines()
    expected = expected_from_truth(truth_path)
    for g, size in (("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)):
        for e in very_late:
            key = (e["video_id"], "view", e["ts"] // size * size)
            c, w = expected[g].get(key, (0, 0))
            expected[g][key] = (c + 1, w + e["watch_ms"])
    print(f"batch vs truth ({lake}): buckets {assert_exact(inst.cfg, days, expected)}")

    # The strong audit: per day, what the speed views miss against the exact batch views; over
    # the days, exactly the events the speed layer counted as dropped late, and never more.
    from batch_layer.audit import audit_day

    missed = 0
    for day in days:
        # `tally audit --date D --json` in process: the report as the command prints it.
        report = json.loads(json.dumps(audit_day(inst.cfg, day)))
        assert report["explained"], report["explanation"]
        assert report["events"]["over_counted"] == 0 and report["watch_ms"]["over_counted"] == 0
        assert report["events"]["batch"] == sum(c for k, (c, _w) in expected["day"].items()
                                                if k[2] == int(dt.datetime.combine(
                                                    day, dt.time(), dt.timezone.utc).timestamp() * 1000))
        missed += report["events"]["missed"]
    assert missed == progress["dropped_late"]
