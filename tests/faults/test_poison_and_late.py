"""Poison pills and events later than the watermark, end to end against ground truth.

1 % of the traffic is poison (malformed JSON, wrong types, 2 MB messages), interleaved with valid
traffic that has retries and late events; after the watermark has passed, events far behind it
are sent too. Nothing may crash; the dead-letter topic must hold exactly the poison; the speed
views may miss only what the dropped-late counter counts (speed <= truth per minute, the
difference equal to the counter); once the batch job has run, the merged counts the API answers
equal the truth, the late events included.
"""

from __future__ import annotations

import collections
import datetime as dt
import json

from tests.integration.speedkit import (
    compare_with_truth, dlq_records, hbase_minutes, make_installation, read_truth,
    send_very_late, sent_records, stop_when_caught_up, wait_for_watermark,
)

DAYS = [dt.date(2026, 11, 21), dt.date(2026, 11, 22)]
GEN = ["--events", "30000", "--videos", "200", "--start", DAYS[0].isoformat(), "--days", "2",
       "--seed", "37", "--duplicates", "0.02", "--invalid", "0", "--late", "0.01"]
BIG = 2 * 1024 * 1024


def poison_pills(n: int) -> list[bytes]:
    """``n`` records that must all be dead-lettered: three kinds, a few of them 2 MB."""
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:  # malformed JSON
            out.append(b'{"event_id": "p-%d", "video_id": "vid-000001", "event_type": "view", "ts": ' % i)
        elif kind == 1:  # well-formed, wrong types
            out.append(json.dumps({"event_id": f"p-{i}", "video_id": "vid-000001",
                                   "event_type": "view", "ts": "yesterday",
                                   "watch_ms": "ten"}).encode())
        elif i % 30 == 2:  # 2 MB: a valid-looking event with a huge id
            out.append(json.dumps({"event_id": "x" * BIG, "video_id": "vid-000001",
                                   "event_type": "view", "ts": "2026-11-21T10:00:00Z"}).encode())
        else:
            out.append(b"\x00\xffnot json at all %d" % i)
    return out


def test_poison_pills_and_late_events(stack, tmp_path, unique, spark_reader):
    from adapters.producer import TallyProducer
    from batch_layer.job import run_dates
    from serving_layer.app import create_app
    from speed_layer.store import HBaseSpeedStore

    inst = make_installation(stack, tmp_path, unique)
    sent_path, truth_path = tmp_path / "sent.jsonl", tmp_path / "truth.parquet"
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "3s")
    # The traffic is written while the stream's JVM starts; it is sent once the queries run.
    inst.generate(*GEN, "--out", str(sent_path), "--truth", str(truth_path))
    valid = sent_records(sent_path)
    poison = poison_pills(len(valid) // 99)  # 1 % of all records sent
    assert sum(len(p) >= BIG for p in poison) >= 3
    every = len(valid) // len(poison)

    inst.wait_for_log("stream: queries speed")
    with TallyProducer(inst.cfg) as producer:
        pills = iter(poison)
        for i, raw in enumerate(valid):
            producer.send_raw(raw, json.loads(raw)["video_id"].encode())
            if i % every == every - 1:
                pill = next(pills, None)
                if pill is not None:
                    producer.send_raw(pill)
        for pill in pills:
            producer.send_raw(pill)
    wait_for_watermark(inst, f"{DAYS[1]}T23:00")
    very_late = send_very_late(inst, 150, DAYS[0].isoformat())
    assert stop_when_caught_up(inst, stream, len(poison)) == 0, inst.stream_log()  # nothing crashed

    # The dead-letter topic holds exactly the poison, each with its reason.
    dlq = dlq_records(inst.cfg, len(poison))
    assert collections.Counter(r.value for r in dlq) == collections.Counter(poison)
    assert all(dict(r.headers)["tally.error"] for r in dlq)

    # Speed <= truth per minute; the difference is exactly the dropped-late counter.
    truth = read_truth(truth_path)
    for e in very_late:
        key = (e["video_id"], "view", e["ts"] // 60_000 * 60_000)
        c, w, co, wo = truth.get(key, (0, 0, 0, 0))
        truth[key] = (c + 1, w + e["watch_ms"], co, wo)
    progress = HBaseSpeedStore(inst.cfg).read_progress()
    figures = compare_with_truth(truth, hbase_minutes(inst.cfg), progress["dropped_late"])
    assert figures["dropped_late"] >= len(very_late)

    # After the batch re-run, merged = truth.
    report = run_dates(spark_reader, inst.cfg, DAYS)  # both days in one run
    assert [(r.day, r.published) for r in report.results] == [(d.isoformat(), True) for d in DAYS], \
        report.lines()
    api = create_app(inst.cfg.replace(serve={"catalog_ttl_s": 0.0})).test_client()
    per_video = collections.defaultdict(lambda: [0, 0])
    for (v, t, _m), (c, w, _co, _wo) in truth.items():
        if t == "view":
            per_video[v][0] += c
            per_video[v][1] += w
    wrong = []
    for video, (count, watch) in sorted(per_video.items()):
        r = api.get(f"/v1/videos/{video}/counts", query_string={
            "from": f"{DAYS[0]}T00:00:00Z", "to": f"{DAYS[1] + dt.timedelta(days=1)}T00:00:00Z",
            "granularity": "day"})
        assert r.status_code == 200, r.json
        assert all(b["source"] == "batch" for b in r.json["buckets"])
        if (r.json["total"], r.json["watch_ms"]) != (count, watch):
            wrong.append((video, (r.json["total"], r.json["watch_ms"]), (count, watch)))
    assert not wrong, f"{len(wrong)} videos differ from the truth, first {wrong[:3]}"
    print(f"poison {len(poison)} of {len(valid) + len(poison)} records, all dead-lettered; speed "
          f"missed {figures['true_events'] - figures['speed_events']} = dropped late "
          f"{figures['dropped_late']}; merged = truth for {len(per_video)} videos after the batch")
