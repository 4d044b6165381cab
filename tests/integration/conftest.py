"""Integration tests talk to the real local stack started by `make test` (`tally stack up`).

Each test owns its names (topic, table, bucket, prefix) so no test depends on another or on an
earlier run. A stack that is not healthy fails the tests with the reason; nothing is skipped.
"""

from __future__ import annotations

import pytest

from schemas.config import load_config


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cfg():
    return load_config()


@pytest.fixture(scope="session")
def stack(cfg):
    from tally.stack import Stack

    status = Stack(cfg).status()
    bad = {name: s["detail"] for name, s in status.items() if not s["healthy"]}
    if bad:
        pytest.fail(f"the local stack is not healthy (run `tally stack up`): {bad}", pytrace=False)
    return cfg


@pytest.fixture(scope="session")
def spark_reader(tmp_path_factory):
    """A SparkSession (with the connector jars) for reading what the jobs wrote."""
    from tally.spark import build_session

    cfg = load_config(overrides={"state_dir": str(tmp_path_factory.mktemp("reader")),
                                 "spark": {"master": "local[1]", "driver_memory": "1g"}})
    spark = build_session(cfg, "tally-test-reader")
    yield spark
    spark.stop()
