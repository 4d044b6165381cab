"""Arming the test-only fault seam (tests/faults/seam/sitecustomize.py) in the processes a fault
test starts, and checking that a point fired."""

import json
import os
from pathlib import Path

SEAM = Path(__file__).resolve().parent / "seam"


def fault_env(markers: Path, spec: str) -> dict[str, str]:
    """The environment that arms failpoints in a process a test starts: the test-only
    ``sitecustomize`` of tests/faults/seam first on its path, the points (``name=action[@n]``)
    and where it leaves a marker when one fires."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(SEAM)] + ([path] if path else [])),
            "TEST_FAILPOINTS": spec, "TEST_FAILPOINTS_MARKERS": str(markers)}


def fired(markers: Path, point: str) -> dict:
    """What the seam wrote when ``point`` fired (the test fails if it did not)."""
    marker = markers / f"{point}.fired"
    assert marker.is_file(), f"failpoint {point} did not fire (no {marker})"
    return json.loads(marker.read_text())
