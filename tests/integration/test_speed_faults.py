"""The speed layer through crashes, an HBase outage and a backlog, against ground truth.

Traffic here has retries but no deliberately late events, so an uninterrupted run's speed views
equal the truth exactly: "identical to an uninterrupted run" is checked as "equal to the truth",
and the archive must hold every valid record exactly once per Kafka offset.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.speedkit import (
    compare_with_truth, dlq_records, expected_archive_and_dlq, hbase_minutes, make_installation,
    read_archive, read_truth, sent_records, wait_exit,
)

GEN = ["--events", "40000", "--videos", "300", "--start", "2026-11-21", "--days", "2",
       "--duplicates", "0.03", "--invalid", "0.005", "--late", "0"]


def generator(inst, seed: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tally.cli", "-q", "generate", *GEN, "--seed",
                             str(seed), *extra], env=inst.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def check_exact(inst, tmp_path, seed: int, spark_reader, dropped_ok: bool = False) -> dict:
    """Speed views equal the truth; the archive holds each valid record once; the dead-letter
    topic holds every invalid record (at least once: the Kafka sink may repeat after a crash)."""
    from speed_layer.store import HBaseSpeedStore

    out = tmp_path / f"sent-{seed}.jsonl"
    inst.tally("generate", *GEN, "--seed", str(seed), "--out", str(out))
    progress = HBaseSpeedStore(inst.cfg).read_progress()
    figures = compare_with_truth(read_truth(tmp_path / f"truth-{seed}.parquet"),
                                 hbase_minutes(inst.cfg), progress["dropped_late"],
                                 ontime_may_drop=dropped_ok)
    if not dropped_ok:
        assert figures["dropped_late"] == 0 and figures["speed_events"] == figures["true_events"]
    valid_ids, invalid = expected_archive_and_dlq(sent_records(out))
    archive = read_archive(spark_reader, inst.cfg)
    rows = archive.select("event_id", "kafka_partition", "kafka_offset").collect()
    assert collections.Counter(r["event_id"] for r in rows) == valid_ids
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == len(rows)
    dlq = dlq_records(inst.cfg, len(invalid))
    assert {r.value for r in dlq} == {raw for raw, _ in invalid}
    return figures


def test_crashes_change_nothing(stack, tmp_path, unique, spark_reader):
    inst = make_installation(stack, tmp_path, unique)
    seed = 31
    gen = generator(inst, seed, "--kafka", "--rate", "600", "--truth",
                    str(tmp_path / f"truth-{seed}.parquet"))
    kills = 0
    # Two SIGKILLs at arbitrary moments while data flows ...
    for _ in range(2):
        stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "4s")
        inst.wait_for_log("stream: queries speed")
        time.sleep(6)
        kill_group(stream)
        kills += 1
    # ... one exactly between the HBase write and the checkpoint commit (fault injection) ...
    before = inst.stream_log().count("fault injection: SIGKILL")
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "4s",
                               env={"TALLY_FAULT_KILL_AFTER_HBASE_WRITE": "1"})
    assert stream.wait(timeout=300) == -signal.SIGKILL
    kills += 1
    assert inst.stream_log().count("fault injection: SIGKILL") == before + 1
    # ... then a clean run to the end of the input.
    assert gen.wait(timeout=300) == 0, gen.stderr.read()
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "4s", "--until-idle", "20")
    assert wait_exit(stream, 600, inst) == 0, inst.stream_log()
    figures = check_exact(inst, tmp_path, seed, spark_reader)
    print(f"after {kills} kills: {figures}")


def test_hbase_outage_loses_nothing_and_archiving_goes_on(stack, tmp_path, unique, spark_reader):
    from tally.stack import Stack

    inst = make_installation(stack, tmp_path, unique, TALLY_HBASE__WRITE_RETRY_S="5")
    seed = 32
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "3s", "--until-idle", "25")
    inst.wait_for_log("stream: queries speed")
    gen = generator(inst, seed, "--kafka", "--rate", "1000", "--truth",
                    str(tmp_path / f"truth-{seed}.parquet"))
    shared = Stack(stack)
    thrift_pid = shared.pid("hbase-thrift")
    metadata = Path(inst.cfg.lake_uri[len("file://"):]) / "raw" / "events" / "_spark_metadata"
    deadline = time.monotonic() + 180  # the outage starts once data flows through both queries
    while not (metadata.is_dir() and any(metadata.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metadata.is_dir() and any(metadata.iterdir()), inst.stream_log()
    try:
        os.killpg(thrift_pid, signal.SIGTERM)
        down_at = time.monotonic()
        while shared.pid("hbase-thrift") is not None:
            time.sleep(0.2)
        archived_before = len(list(metadata.iterdir()))
        # HBase stays unreachable until the archive has committed more batches without it and
        # the speed query has failed on it.
        deadline = time.monotonic() + 120
        while len(list(metadata.iterdir())) <= archived_before and time.monotonic() < deadline:
            time.sleep(0.5)
        archived_during = len(list(metadata.iterdir()))
        inst.wait_for_log("speed query failed, restarting", timeout_s=240)
        outage_s = time.monotonic() - down_at
    finally:
        res = subprocess.run([sys.executable, "-m", "tally.cli", "-q", "stack", "up"],
                             env={k: v for k, v in os.environ.items()}, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert archived_during > archived_before, "archiving stopped while HBase was down"
    assert gen.wait(timeout=300) == 0, gen.stderr.read()
    assert wait_exit(stream, 600, inst) == 0, inst.stream_log()
    figures = check_exact(inst, tmp_path, seed, spark_reader)
    print(f"after an HBase outage (down {outage_s:.0f}s): {figures}")


@pytest.mark.parametrize("cap", [0, 15000])
def test_backlog(stack, tmp_path, unique, spark_reader, cap):
    """Started after the whole input was written: with no cap, the same counts as a run that ran
    along; with a per-trigger cap, any difference is exactly the counted late drops."""
    inst = make_installation(stack, tmp_path, unique,
                             TALLY_STREAM__MAX_OFFSETS_PER_TRIGGER=str(cap))
    seed = 33
    inst.tally("generate", *GEN, "--seed", str(seed), "--kafka", "--truth",
               str(tmp_path / f"truth-{seed}.parquet"))
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "3s", "--until-idle", "20")
    assert wait_exit(stream, 600, inst) == 0, inst.stream_log()
    figures = check_exact(inst, tmp_path, seed, spark_reader, dropped_ok=cap > 0)
    print(f"backlog, cap {cap}: {figures}")
