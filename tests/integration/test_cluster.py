"""The batch job and the streaming job on a real Spark standalone cluster (`tally cluster`):
submitted with spark-submit, the executors running in the packed virtualenv, and what they wrote
checked against ground truth, number for number.

The cluster is the test's own (own state directory, free ports); the packed environment is cached
under the shared stack's state directory, so it is built once and then only when the sources
change."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.batchkit import assert_exact, generate_archive
from tests.integration.speedkit import (
    compare_with_truth, hbase_minutes, make_installation, read_truth,
)

D1 = dt.date(2026, 11, 20)


@dataclass
class LocalCluster:
    env: dict[str, str]   # TALLY_CLUSTER__* for every installation that submits to it
    state: Path
    webui: str

    def master(self) -> dict:
        with urllib.request.urlopen(f"{self.webui}/json/", timeout=10) as resp:
            return json.load(resp)

    def executor_dirs(self, app_name: str) -> list[Path]:
        """The one finished application called ``app_name``: its executors' directories."""
        apps = [a for a in self.master()["completedapps"] if a["name"] == app_name]
        assert len(apps) == 1 and apps[0]["state"] == "FINISHED", apps
        assert apps[0]["cores"] > 0, apps  # it was given executors
        return sorted((self.state / "cluster" / "work" / apps[0]["id"]).iterdir())


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tally(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "tally.cli", *args], env=env, text=True,
                         capture_output=True, timeout=timeout)
    assert res.returncode == 0, f"tally {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def cluster(stack, tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    master, webui, worker, worker_ui = free_ports(4)
    cluster_env = {
        "TALLY_CLUSTER__MASTER_PORT": str(master), "TALLY_CLUSTER__MASTER_WEBUI_PORT": str(webui),
        "TALLY_CLUSTER__WORKER_PORT": str(worker), "TALLY_CLUSTER__WORKER_WEBUI_PORT": str(worker_ui),
        "TALLY_CLUSTER__ENV_DIR": str(stack.state_path / "cluster" / "env"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")
           or k.startswith("TALLY_STACK__")}
    env.update(cluster_env, TALLY_STATE_DIR=str(state))
    t0 = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "tally.cli", "cluster", "up"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        tally(env, "cluster", "pack", timeout=600)  # meanwhile the master and the worker start
        print(f"cluster pack (cached or built): {time.monotonic() - t0:.1f}s")
        out, err = up.communicate(timeout=300)
        assert up.returncode == 0, err
        print(f"cluster up and pack: {time.monotonic() - t0:.1f}s")
        lc = LocalCluster(cluster_env, state, f"http://127.0.0.1:{webui}")
        status = json.loads(subprocess.run(
            [sys.executable, "-m", "tally.cli", "cluster", "status", "--json"], env=env,
            capture_output=True, text=True, timeout=60).stdout)
        assert status["healthy"], status
        assert [w["cores"] for w in lc.master()["workers"] if w["state"] == "ALIVE"] == [2]
        yield lc
    finally:
        if up.poll() is None:
            up.kill()
        subprocess.run([sys.executable, "-m", "tally.cli", "cluster", "down"], env=env,
                       capture_output=True, timeout=120)


def test_batch_and_stream_jobs_on_the_cluster(stack, cluster, tmp_path, unique, spark_reader):
    """Both jobs at once, as in production (the stream runs while the nightly batch does), each
    in its own installation; each holds one of the worker's two cores."""
    small = {"TALLY_SPARK__DRIVER_MEMORY": "1g", "TALLY_SPARK__SHUFFLE_PARTITIONS": "2"}
    batch = make_installation(stack, tmp_path / "batch", f"{unique}b", hbase=False, **small,
                              **cluster.env)  # the batch layer uses no HBase table
    stream = make_installation(stack, tmp_path / "stream", f"{unique}s", **small, **cluster.env)
    truth_path = tmp_path / "stream-truth.parquet"
    stream.tally("-q", "generate", "--events", "3000", "--videos", "100", "--start", "2026-11-20",
                 "--days", "1", "--seed", "62", "--late", "0.01", "--duplicates", "0.03",
                 "--invalid", "0.01", "--truth", str(truth_path), "--kafka")
    t0 = time.monotonic()
    stream_log = open(tmp_path / "stream.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tally.cli", "cluster", "submit", "stream", "--", "--trigger", "2s",
         "--archive-trigger", "5s", "--until-idle", "8"],
        env=stream.env, stdout=stream_log, stderr=subprocess.STDOUT, start_new_session=True)
    # While it runs: the Python workers that write to HBase are the executor's, started from
    # the packed environment the executor unpacked (not this machine's Python).
    workers: set[tuple[str, str]] = set()
    watcher = threading.Thread(target=watch_python_workers,
                               args=(cluster.state / "cluster" / "work", proc, workers), daemon=True)
    watcher.start()
    try:
        expected = generate_archive(batch, tmp_path, spark_reader, seed=61, events=3000, days=1)
        t1 = time.monotonic()
        res = batch.tally("cluster", "submit", "batch", "--", "--date", D1.isoformat(), timeout=600)
        print(f"batch on the cluster: {time.monotonic() - t1:.1f}s; buckets "
              f"{assert_exact(batch.cfg, [D1], expected)}")
        assert f"{D1}: 3,000 events" in res.stdout, res.stdout
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        watcher.join(10)
        stream_log.close()
    log = (tmp_path / "stream.log").read_text(errors="replace")
    assert rc == 0, log[-5000:]
    print(f"stream on the cluster: {time.monotonic() - t0:.1f}s from submit to exit")

    from speed_layer.store import HBaseSpeedStore

    progress = HBaseSpeedStore(stream.cfg).read_progress()
    assert progress is not None, log[-5000:]
    figures = compare_with_truth(read_truth(truth_path), hbase_minutes(stream.cfg),
                                 progress["dropped_late"])
    print(f"speed vs truth on the cluster: {figures}")

    # The work ran in the cluster's executors, each handed the packed environment; the stream's
    # HBase writes ran in Python workers started from it.
    executors = {}
    for app in ("tally-batch", "tally-stream"):
        (executors[app],) = cluster.executor_dirs(app)
        executor_log = (executors[app] / "stderr").read_text(errors="replace")
        assert "Unpacking an archive" in executor_log and "#environment" in executor_log
        assert executor_log.count("Finished task") > 0
        assert (executors[app] / "environment" / "lib" / f"python{sys.version_info.major}."
                f"{sys.version_info.minor}" / "site-packages" / "batch_layer" / "job.py").is_file()
    assert workers and {exe for _, exe in workers} == {"./environment/bin/python"}, workers
    assert str(executors["tally-stream"].resolve()) in {cwd for cwd, _ in workers}, workers


def watch_python_workers(work_dir: Path, proc: subprocess.Popen, seen: set) -> None:
    """Add to ``seen`` (working directory, executable as invoked) of every PySpark worker process
    that runs in an executor directory under ``work_dir`` while ``proc`` runs."""
    prefix = str(work_dir.resolve())
    while proc.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if not any(a.startswith(b"pyspark.") for a in argv):
                    continue
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd.startswith(prefix):
                seen.add((cwd, argv[0].decode()))
        time.sleep(0.5)
