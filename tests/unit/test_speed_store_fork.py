"""A forked process (a gunicorn worker) starts with no HBase pools of its parent's."""

import os

from speed_layer import store


def test_a_forked_child_has_no_pools_of_its_parent():
    store._POOLS[("parent", 1, 1)] = object()
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it holds, then leave at once
            os.write(w, str(len(store._POOLS)).encode())
            os._exit(0)
        os.close(w)
        seen = os.read(r, 16).decode()
        os.waitpid(pid, 0)
        assert seen == "0"
        assert ("parent", 1, 1) in store._POOLS  # the parent keeps its own
    finally:
        store._POOLS.pop(("parent", 1, 1), None)
