"""Arming the test-only fault seam (tests/faults/seam/sitecustomize.py) in the processes a fault
test starts, and checking that a point fired."""

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

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


@contextlib.contextmanager
def private_part(base, root: Path, part: str) -> Iterator[tuple]:
    """A part of the stack of the test's own, on free ports, for a test that kills it while
    the shared stack serves the tests that run meanwhile: a Kafka broker (``kafka``) or a
    Thrift server in front of the shared HBase (``hbase-thrift``). Yields the part's
    :class:`~tally.devstack.stack.Stack` (``pid``, ``start_parts``) and the settings that
    point an installation at it; stopped on exit."""
    from tally.devstack.stack import Stack
    from tests.integration.servekit import free_port_block

    port = free_port_block(2)
    if part == "kafka":
        changes = {"kafka": {"bootstrap_servers": f"127.0.0.1:{port}",
                             "controller_port": port + 1}}
        env = {"TALLY_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    elif part == "hbase-thrift":
        changes = {"hbase": {"port": port}}
        env = {"TALLY_HBASE__PORT": str(port)}
    else:
        raise ValueError(f"no private {part}")
    own = Stack(base.replace(state_dir=str(root), **changes))
    try:
        own.start_parts([own.parts[part]], f"private {part}")
        yield own, env
    finally:
        own.down()
