"""`tally stream` stopped the way supervisors stop it: SIGTERM to its whole process group (what
`kill -TERM -PGID` and systemd's KillMode=control-group send), and SIGTERM to its main process only
(KillMode=mixed, which infra/systemd/tally-stream.service uses; systemd then SIGKILLs whatever is
left). Each stop must exit 0 without a traceback, with every started micro-batch committed, and a
restart must count exactly what arrived meanwhile."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from speed_layer.app import QUERIES
from tests.integration.speedkit import hbase_minutes, make_installation

STOP_TIMEOUT_S = 90  # below TimeoutStopSec of the unit
TALLY = Path(sys.executable).parent / "tally"  # the console script a unit's ExecStart runs


class Supervised:
    """The stream started as a supervisor starts it: the CLI, stdin from /dev/null, its own
    session (so its process group is its session), stdout and stderr to files."""

    def __init__(self, inst, name: str):
        self.inst = inst
        self.err_path = inst.root / f"{name}.err"
        with open(inst.root / f"{name}.out", "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(TALLY), "stream", "--trigger", "2s", "--archive-trigger", "2s"],
                env=inst.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the stream did not stop within {STOP_TIMEOUT_S}s:\n"
                                 f"{self.stderr()[-5000:]}") from None

    def kill(self) -> None:
        for pid in session_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid`` (a unit's control group, as far as this test can
    see one: the stream's processes never start sessions of their own)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(entry))
    return out


def send(inst, tag: str, n: int) -> collections.Counter:
    """``n`` valid, distinct, on-time events; returns what the speed views must hold for them."""
    from adapters.producer import TallyProducer

    now = int(time.time() * 1000)
    expected: dict = collections.defaultdict(lambda: [0, 0])
    with TallyProducer(inst.cfg) as producer:
        for i in range(n):
            e = {"event_id": f"{tag}-{i}", "video_id": f"vid-{i % 4}", "event_type": "view",
                 "ts": now - 1000 * (i % 20), "watch_ms": 100 + i}
            producer.send_event(e)
            cell = expected[(e["video_id"], "view", e["ts"] // 60_000 * 60_000)]
            cell[0] += 1
            cell[1] += e["watch_ms"]
    return collections.Counter({k: tuple(v) for k, v in expected.items()})


def merged(*parts: collections.Counter) -> dict:
    out: dict = {}
    for part in parts:
        for key, (c, w) in part.items():
            c0, w0 = out.get(key, (0, 0))
            out[key] = (c0 + c, w0 + w)
    return out


def wait_counted(stream: Supervised, expected: dict, timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    got: dict = {}
    while time.monotonic() < deadline:
        assert stream.proc.poll() is None, f"the stream exited:\n{stream.stderr()[-5000:]}"
        got = hbase_minutes(stream.inst.cfg)
        if got == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"speed views {got} != {expected} after {timeout_s}s:\n"
                         f"{stream.stderr()[-5000:]}")


def wait_for(probe, timeout_s: float, stream: Supervised):
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"not within {timeout_s}s:\n{stream.stderr()[-5000:]}"
        time.sleep(0.2)
    return value


def assert_clean_stop(stream: Supervised) -> None:
    code = stream.wait_exit()
    err = stream.stderr()
    assert code == 0, f"exit {code}:\n{err[-5000:]}"
    assert "Traceback" not in err and "Exception" not in err, err[-5000:]
    checkpoints = stream.inst.cfg.state_path / "checkpoints"
    for q in QUERIES:
        batches = {d: {p.name for p in (checkpoints / q / d).iterdir() if p.name.isdigit()}
                   for d in ("offsets", "commits")}
        assert batches["offsets"] == batches["commits"], (q, batches)
    assert batches_of(stream.inst, "speed"), "the speed query never committed a batch"


def batches_of(inst, query: str) -> set[int]:
    return {int(p.name) for p in (inst.cfg.state_path / "checkpoints" / query / "commits").iterdir()
            if p.name.isdigit()}


def test_group_sigterm_then_restart_exact(stack, tmp_path, unique):
    inst = make_installation(stack, tmp_path, unique)
    first = send(inst, "a", 60)
    stream = Supervised(inst, "run1")
    wait_counted(stream, merged(first))
    os.killpg(stream.proc.pid, signal.SIGTERM)
    assert_clean_stop(stream)
    committed = batches_of(inst, "speed")

    # Produced while the stream is down: the restart counts it once, re-counting nothing.
    second = send(inst, "b", 40)
    stream = Supervised(inst, "run2")
    wait_counted(stream, merged(first, second))
    # The batch that wrote them commits just after its writes: wait for its commit file.
    new = wait_for(lambda: batches_of(inst, "speed") - committed, 60, stream)
    assert min(new) == max(committed) + 1
    os.killpg(stream.proc.pid, signal.SIGINT)
    assert_clean_stop(stream)


def test_main_pid_sigterm_leaves_nothing_to_kill(stack, tmp_path, unique):
    inst = make_installation(stack, tmp_path, unique)
    stream = Supervised(inst, "run")
    wait_counted(stream, merged(send(inst, "a", 30)))
    os.kill(stream.proc.pid, signal.SIGTERM)
    assert_clean_stop(stream)
    # KillMode=mixed SIGKILLs what is left of the unit once its main process has exited: the
    # driver's JVM must be gone by then (its shutdown hooks run), not killed.
    left = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
            for pid in session_pids(stream.proc.pid)]
    assert not left, left


def test_the_systemd_unit_stops_what_these_tests_stop():
    """The unit sends what the tests send (SIGTERM, to the main process) and waits longer."""
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(Path(__file__).parents[2] / "infra" / "systemd" / "tally-stream.service")
    service = unit["Service"]
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > STOP_TIMEOUT_S
    assert service["ExecStart"].split()[-1] == "stream"
