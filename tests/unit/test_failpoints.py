"""The fault seam: production's failpoints are no-ops; the test-only sitecustomize
(tests/faults/seam) arms them in the processes the fault tests start, and leaves a marker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from adapters import failpoints

ROOT = Path(__file__).resolve().parents[2]
SEAM = ROOT / "tests" / "faults" / "seam"
SCRIPT = ("from adapters.failpoints import armed, failpoint\n"
          "print('armed', armed(), flush=True)\n"
          "for i in range(3):\n"
          "    failpoint('job.step', batch_id=i, empty=i == 0)\n"
          "    print('passed', i, flush=True)\n")


def run(env_extra: dict[str, str], seam: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_FAILPOINTS", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(([str(SEAM)] if seam else []) + [str(ROOT)])
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=60)


def test_production_points_are_no_ops():
    assert not failpoints.armed()
    failpoints.failpoint("batch.write", granularity="minute")  # nothing registered: nothing happens
    res = run({"TEST_FAILPOINTS": "job.step=kill"}, seam=False)  # the variable alone does nothing
    assert res.returncode == 0 and "armed False" in res.stdout and "passed 2" in res.stdout


def test_the_seam_kills_at_the_nth_counted_pass_and_leaves_a_marker(tmp_path):
    res = run({"TEST_FAILPOINTS": "job.step=kill@2", "TEST_FAILPOINTS_MARKERS": str(tmp_path)})
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stdout, res.stderr)
    # Pass 0 is empty (not counted), pass 1 is the first counted, pass 2 the second: killed there.
    assert res.stdout.split("\n")[:3] == ["armed True", "passed 0", "passed 1"]
    marker = json.loads((tmp_path / "job.step.fired").read_text())
    assert marker["point"] == "job.step" and marker["batch_id"] == 2
