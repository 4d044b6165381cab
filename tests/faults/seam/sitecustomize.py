"""Test-only fault seam, loaded at start-up by the processes the fault tests start (their
PYTHONPATH begins with this directory; see tests/faults/conftest.py ``fault_env``).

``TEST_FAILPOINTS="name=action[@n]"`` (comma-separated) registers a handler with
adapters.failpoints: at the n-th pass of point ``name`` (1 when not given) that counts (a context
``empty=True`` does not), it writes ``<TEST_FAILPOINTS_MARKERS>/<name>.fired`` and then acts:
``kill`` SIGKILLs the process, ``killpg`` its whole process group (the JVM with it).
"""

import os

_SPEC = os.environ.get("TEST_FAILPOINTS", "")

if _SPEC:
    import json
    import signal
    import time
    from pathlib import Path

    from adapters import failpoints

    _points: dict[str, list] = {}
    for part in _SPEC.split(","):
        name, _, action = part.strip().partition("=")
        action, _, nth = action.partition("@")
        _points[name] = [action or "kill", int(nth or 1)]
    _markers = Path(os.environ.get("TEST_FAILPOINTS_MARKERS", "."))

    def _handler(name, context):
        point = _points.get(name)
        if point is None or context.get("empty"):
            return
        point[1] -= 1
        if point[1] > 0:
            return
        _markers.mkdir(parents=True, exist_ok=True)
        record = {"point": name, "pid": os.getpid(), "at": time.time(),
                  **{k: v for k, v in context.items() if isinstance(v, (int, str, bool))}}
        (_markers / f"{name}.fired").write_text(json.dumps(record))
        if point[0] == "killpg":
            os.killpg(os.getpgid(0), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    failpoints.register(_handler)
