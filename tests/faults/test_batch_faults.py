"""Faults around the batch job, against ground truth: SIGKILLed while writing and while
publishing, and the lake made unreachable in the middle of a run (a cut TCP proxy in front of the
S3 endpoint). Every time, readers keep seeing the version published before, no file of the broken
run is ever read, and a re-run publishes the correct new version."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

from batch_layer.job import run_day
from tests.faults.faultkit import fault_env, fired
from tests.faults.tcpproxy import TcpProxy
from tests.integration.batchkit import (
    assert_exact, current, expected_from_events, generate_archive, load, stage,
)
from tests.integration.speedkit import make_installation

D1 = dt.date(2026, 11, 20)


def _with_extra(first: dict, extra: list[dict]) -> dict:
    want = expected_from_events(extra)
    merged = {g: dict(first[g]) for g in first}
    for g in merged:
        for k, (c, w) in want[g].items():
            c0, w0 = merged[g].get(k, (0, 0))
            merged[g][k] = (c0 + c, w0 + w)
    return merged


def _extra(n: int, tag: str) -> list[dict]:
    """Raw events added to a published day, so a new version differs from the published one."""
    return [{"event_id": f"{tag}-{i}", "video_id": f"v-{tag}", "event_type": "view",
             "ts": f"2026-11-20T12:{i % 60:02d}:00.000Z", "watch_ms": 1000} for i in range(n)]


def _batch_in_process(spark, inst) -> None:
    """`tally batch --date D1`, in process on the reader's session (one JVM start fewer), where
    the command itself is not what the case is about; it must publish."""
    from batch_layer.job import run_dates

    report = run_dates(spark, inst.cfg, [D1], skip_unchanged=True, mode="batch")
    assert [r.published for r in report.results] == [True], report.lines()


def _start_batch(inst) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tally.cli", "batch", "--date", D1.isoformat()],
                            env=inst.env, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _read_until(proc: subprocess.Popen, text: str) -> list[str]:
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"the batch job ended before {text!r}:\n{''.join(seen)[-3000:]}")


def test_killed_while_writing_and_publishing(stack, tmp_path, unique, spark_reader):
    inst = make_installation(stack, tmp_path, unique, hbase=False)
    first = generate_archive(inst, tmp_path, spark_reader, seed=42, days=1)
    assert run_day(spark_reader, inst.cfg, D1).published  # in process: one JVM start fewer
    before = current(inst, D1)
    assert_exact(inst.cfg, [D1], first)
    extra = _extra(300, "late")
    load(spark_reader, inst.cfg, stage(extra, tmp_path / "extra"))

    # 1. SIGKILL from outside while the views are being written.
    proc = _start_batch(inst)
    _read_until(proc, "writing version")
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # the fault fired: the job died of it
    # 2. and 3. Killed after the minute view was written, and right before the publication.
    for point in ("batch.write", "batch.publish"):
        markers = tmp_path / "failpoints" / point
        res = inst.tally("batch", "--date", D1.isoformat(), check=False,
                         env_extra=fault_env(markers, f"{point}=kill"))
        assert res.returncode == -signal.SIGKILL, res.stderr
        assert fired(markers, point)["point"] == point
        assert current(inst, D1) == before  # readers still see the former version
        assert_exact(inst.cfg, [D1], first)

    versions = {p.name for p in (inst.cfg.state_path / "lake" / "views" / "_runs").iterdir()}
    assert len(versions) >= 3  # the published one and orphans of the killed runs

    _batch_in_process(spark_reader, inst)
    after = current(inst, D1)
    assert after["seq"] == before["seq"] + 1 and after["previous_version"] == before["version"]
    assert_exact(inst.cfg, [D1], _with_extra(first, extra))
    # Only the files the entry lists are read: no orphan is among them.
    listed = {f for g in after["views"].values() for f in g["files"]}
    assert listed and all(f"/{after['version']}/" in f for f in listed)


def test_lake_unreachable_mid_run(stack, tmp_path, unique, spark_reader):
    s3 = urlparse(stack.lake.s3_endpoint)
    proxy = TcpProxy((s3.hostname, s3.port))
    try:
        inst = make_installation(stack, tmp_path, unique, lake="s3", hbase=False,
                                 TALLY_LAKE__S3_ENDPOINT=proxy.endpoint,
                                 TALLY_LAKE__S3_RETRY_LIMIT="1")  # fail in seconds, not minutes
        first = generate_archive(inst, tmp_path, spark_reader, seed=43, days=1)
        _batch_in_process(spark_reader, inst)
        before = current(inst, D1)
        extra = _extra(200, "more")
        load(spark_reader, inst.cfg, stage(extra, tmp_path / "extra"))

        proc = _start_batch(inst)
        _read_until(proc, "writing version")
        proxy.cut()
        t0 = time.monotonic()
        try:
            _out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the batch job hung on an unreachable lake")
        failed_in = time.monotonic() - t0
        last = err.strip().splitlines()[-1] if err.strip() else ""
        # A clean failure: a non-zero exit with one clear line, not a crash or a hang.
        assert proc.returncode == 1 and last.startswith("tally batch: error:"), err[-3000:]
        assert "Traceback" not in err, err[-3000:]

        assert proxy.refused > 0  # the fault fired: the job's lake calls met the cut
        proxy.restore()
        assert current(inst, D1) == before  # the served version is unchanged
        assert_exact(inst.cfg, [D1], first)
        _batch_in_process(spark_reader, inst)  # the re-run succeeds
        after = current(inst, D1)
        assert after["previous_version"] == before["version"]
        assert_exact(inst.cfg, [D1], _with_extra(first, extra))
        print(f"lake cut mid-run: the job failed cleanly in {failed_in:.0f}s ({last!r}); "
              f"{proxy.refused} connections refused while cut; the re-run published "
              f"{after['version']}")
    finally:
        proxy.close()
