"""Faults around the streaming job, against ground truth: the driver SIGKILLed three times mid-run,
a second job started on the same checkpoints, and HBase's Thrift server stopped for a minute while
the job streams and the API serves.

Traffic here has retries but no deliberately late events, so an uninterrupted run's speed views
equal the truth exactly: "nothing lost, nothing duplicated" is checked as "equal to the truth",
and the archive must hold every valid record exactly once per Kafka offset.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.faultkit import fault_env, fired, private_part
from tests.integration.batchkit import generate_archive
from tests.integration.speedkit import (
    check_exact, make_installation, stop_when_caught_up, wait_exit,
)

GEN = ["--events", "40000", "--videos", "300", "--start", "2026-11-21", "--days", "2",
       "--duplicates", "0.03", "--invalid", "0.005", "--late", "0"]


def generator(inst, seed: int, *extra: str, summary: bool = False) -> subprocess.Popen:
    """The generator sending to Kafka; with ``summary`` its JSON summary on stdout."""
    return subprocess.Popen([sys.executable, "-m", "tally.cli", "-q", "generate", *GEN, "--seed",
                             str(seed), *extra, *(["--json"] if summary else [])], env=inst.env,
                            stdout=subprocess.PIPE if summary else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=summary)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # the fault fired: the job died of it


def test_driver_killed_three_times_and_a_second_job_refused(stack, tmp_path, unique, spark_reader):
    inst = make_installation(stack, tmp_path, unique)
    seed = 31
    gen = generator(inst, seed, "--kafka", "--rate", "600", "--truth",
                    str(tmp_path / f"truth-{seed}.parquet"), summary=True)
    kills = 0
    started = "stream: queries speed"
    # Two SIGKILLs at arbitrary moments while data flows ...
    for run in range(2):
        stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "4s")
        inst.wait_for_log(started, times=run + 1)
        time.sleep(6)  # not a wait for a condition: an arbitrary moment mid-run to kill at
        kill_group(stream)
        kills += 1
    # ... one exactly between the HBase write and the checkpoint commit (fault injection) ...
    markers = tmp_path / "failpoints"
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "4s",
                               env=fault_env(markers, "stream.speed_written=killpg"))
    assert stream.wait(timeout=300) == -signal.SIGKILL
    kills += 1
    assert fired(markers, "stream.speed_written")["batch_id"] >= 0
    # ... then a clean run to the end of the input, during which a second job is started on the
    # same checkpoints: it must fail fast and change nothing.
    runs = inst.stream_log_text().count(started)
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "4s")
    inst.wait_for_log(started, timeout_s=240, times=runs + 1)
    t0 = time.monotonic()
    second = inst.tally("stream", "--until-idle", "5", check=False, timeout=120)
    refused_in = time.monotonic() - t0
    assert second.returncode != 0 and "in use by a running streaming job" in second.stderr, \
        second.stderr[-2000:]
    gen_out, gen_err = gen.communicate(timeout=300)
    assert gen.returncode == 0, gen_err
    # Every invalid record sent is dead-lettered (replays after the kills may add copies).
    assert stop_when_caught_up(inst, stream, json.loads(gen_out)["invalid"]) == 0, inst.stream_log()
    figures = check_exact(inst, tmp_path, seed, GEN, spark_reader)
    print(f"after {kills} kills and a refused second job ({refused_in:.1f}s): lost "
          f"{figures['true_events'] - figures['speed_events']}, {figures}")


def _published_day(inst, tmp_path, spark_reader, day: dt.date) -> dict:
    """A published batch view of ``day`` (a day the stream's traffic does not touch)."""
    from batch_layer.job import run_day

    expected = generate_archive(inst, tmp_path, spark_reader, seed=35, events=3000, days=1,
                                start=day.isoformat(), name="before")
    assert run_day(spark_reader, inst.cfg, day).published
    return expected


def test_hbase_thrift_down_for_a_minute_while_streaming_and_serving(stack, tmp_path, unique,
                                                                     spark_reader):
    # The installation's own Thrift server in front of the shared HBase, stopped and restarted;
    # the shared one serves the tests that run meanwhile.
    with private_part(stack, tmp_path / "thrift", "hbase-thrift") as (thrift, env):
        inst = make_installation(stack, tmp_path, unique, TALLY_HBASE__WRITE_RETRY_S="5", **env)
        _hbase_down_for_a_minute(inst, thrift, tmp_path, spark_reader)


def _hbase_down_for_a_minute(inst, thrift, tmp_path, spark_reader) -> None:
    from serving_layer.app import create_app

    day0 = dt.date(2026, 11, 20)
    expected0 = _published_day(inst, tmp_path, spark_reader, day0)
    api = create_app(inst.cfg.replace(serve={"catalog_ttl_s": 0.0, "hbase_timeout_ms": 1000})
                     ).test_client()
    video = max(((k[0], c) for k, (c, _w) in expected0["day"].items() if k[1] == "view"),
                key=lambda kc: kc[1])[0]
    query = {"from": "2026-11-20T12:00:00Z", "to": "2026-11-21T12:00:00Z", "granularity": "hour"}

    seed = 32
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "3s", "--until-idle", "12")
    inst.wait_for_log("stream: queries speed")
    gen = generator(inst, seed, "--kafka", "--rate", "1000", "--truth",
                    str(tmp_path / f"truth-{seed}.parquet"))
    metadata = Path(inst.cfg.lake_uri[len("file://"):]) / "raw" / "events" / "_spark_metadata"
    deadline = time.monotonic() + 180  # the outage starts once data flows through both queries
    while not (metadata.is_dir() and any(metadata.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metadata.is_dir() and any(metadata.iterdir()), inst.stream_log()
    served = []
    try:
        os.killpg(thrift.pid("hbase-thrift"), signal.SIGTERM)
        down_at = time.monotonic()
        while thrift.pid("hbase-thrift") is not None:
            time.sleep(0.2)
        archived_before = len(list(metadata.iterdir()))
        # Down for at least a minute, and until the archive has committed more batches without
        # HBase and the speed query has failed on it; the API answers all along.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (
                time.monotonic() - down_at < 60
                or len(list(metadata.iterdir())) <= archived_before
                or "speed query failed, restarting" not in inst.stream_log()):
            r = api.get(f"/v1/videos/{video}/counts", query_string=query)
            served.append(r.status_code)
            assert r.status_code == 200, r.json
            body = r.json
            assert body["speed_unavailable"] is True
            batch = {b["start"]: b["count"] for b in body["buckets"] if b["source"] == "batch"}
            assert len(batch) == 12 and all(b["count"] is None for b in body["buckets"]
                                            if b["source"] == "speed")
            for start, count in batch.items():
                ms = int(dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp() * 1000)
                assert count == expected0["hour"].get((video, "view", ms), (0, 0))[0], start
            time.sleep(1)
        archived_during = len(list(metadata.iterdir()))
        assert "speed query failed, restarting" in inst.stream_log(), inst.stream_log()
        outage_s = time.monotonic() - down_at
    finally:
        thrift.start_parts([thrift.parts["hbase-thrift"]])  # waits until it answers
    assert outage_s >= 60 and archived_during > archived_before, "archiving stopped while HBase was down"
    assert gen.wait(timeout=300) == 0, gen.stderr.read()
    assert wait_exit(stream, 600, inst) == 0, inst.stream_log()
    figures = check_exact(inst, tmp_path, seed, GEN, spark_reader)
    r = api.get(f"/v1/videos/{video}/counts", query_string=query)
    assert r.status_code == 200 and r.json["speed_unavailable"] is False
    print(f"after an HBase outage of {outage_s:.0f}s ({len(served)} API answers during it, all "
          f"200 with the batch part exact): lost {figures['true_events'] - figures['speed_events']}, "
          f"{figures}")
