"""Shared fixtures: a local SparkSession for unit tests, configs with isolated names, and the real
local stack for the integration tests (tests/integration) and the fault-injection suite (tests/faults)."""

from __future__ import annotations

import os
import uuid
import warnings

import pytest

from schemas.config import load_config
from tests import TEST_SPARK


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from adapters.spark import build_session

    state = tmp_path_factory.mktemp("spark-state")
    cfg = load_config(environ={}, overrides={"state_dir": str(state),
                                             "spark": TEST_SPARK})
    session = build_session(cfg, "tally-unit-tests")
    yield session
    session.stop()


@pytest.fixture
def unique(request):
    """A short unique suffix for topics, tables and prefixes a test owns. After a test that used
    the stack, its HBase tables (prefix ``t<unique>``) and Kafka topics (``*.<unique>*``) are
    dropped: hundreds of leftover pre-split tables would slow the one RegionServer for the rest of
    the suite."""
    u = uuid.uuid4().hex[:10]
    yield u
    if "stack" in request.fixturenames:
        try:
            _drop_owned(request.getfixturevalue("stack"), u)
        except Exception as exc:  # cleanup only: the test's outcome stands
            warnings.warn(f"could not drop what test {u} created: {exc}")


def _drop_owned(cfg, u: str) -> None:
    import happybase
    from kafka.admin import KafkaAdminClient

    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port, timeout=cfg.hbase.timeout_ms)
    try:
        for name in conn.tables():
            if name.decode().startswith(f"t{u}"):
                conn.delete_table(name, disable=True)
    finally:
        conn.close()
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers)
    try:
        owned = [t for t in admin.list_topics() if u in t]
        if owned:
            admin.delete_topics(owned)
    finally:
        admin.close()


def _logging_state() -> tuple:
    import logging

    from adapters import log

    root = logging.getLogger("tally")
    return log._QUIET, list(root.handlers), root.level, root.propagate


_LOGGING_AT_START = _logging_state()


@pytest.fixture(autouse=True)
def _restore_logging():
    """`tally` run in process (``cli.main``, also from module-scoped fixtures) sets up logging
    for the process: ``-q`` silences the progress lines, and its handler holds the stderr of
    the test that ran it. Before and after each test, logging is put back as the session
    found it, so that a test on the same worker sees its own output."""
    _reset_logging()
    yield
    _reset_logging()


def _reset_logging() -> None:
    import logging

    from adapters import log

    root = logging.getLogger("tally")
    quiet, handlers, level, propagate = _LOGGING_AT_START
    log._QUIET, root.handlers[:], root.level, root.propagate = quiet, handlers, level, propagate


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("TALLY_"):
            monkeypatch.delenv(key)


# Files whose tests share a session-scoped world run on one pytest-xdist worker, which builds it
# once; every other file is a group of its own (module-scoped fixtures are built once too).
XDIST_GROUPS = {
    "faults/test_front_door.py": "faults-serving-world",
    "faults/test_serving_faults.py": "faults-serving-world",
    "integration/test_serving_schema.py": "serving-world",
    "integration/test_serving_page.py": "serving-world",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups into node ids
def pytest_collection_modifyitems(items):
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path or "/faults/" in path:
            item.add_marker(pytest.mark.integration)
        if "/faults/" in path:
            item.add_marker(pytest.mark.faults)
        rel = "/".join(path.split("/")[-2:])
        item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(rel, rel)))


@pytest.fixture(scope="session")
def cfg():
    return load_config()


@pytest.fixture(scope="session")
def stack(cfg):
    from tally.devstack.stack import Stack

    status = Stack(cfg).status()
    bad = {name: s["detail"] for name, s in status.items() if not s["healthy"]}
    if bad:
        pytest.fail(f"the local stack is not healthy (run `tally stack up`): {bad}", pytrace=False)
    return cfg


@pytest.fixture(scope="session")
def spark_reader(tmp_path_factory):
    """A SparkSession (with the connector jars) for reading what the jobs wrote, and for the batch
    runs the tests make in process (both cores: most of them run while nothing else does)."""
    from adapters.spark import build_session

    cfg = load_config(overrides={"state_dir": str(tmp_path_factory.mktemp("reader")),
                                 "spark": TEST_SPARK})
    spark = build_session(cfg, "tally-test-reader")
    yield spark
    spark.stop()
