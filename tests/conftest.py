"""Shared fixtures: a local SparkSession for unit tests, configs with isolated names."""

from __future__ import annotations

import os
import uuid

import pytest

from schemas.config import load_config


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from tally.spark import build_session

    state = tmp_path_factory.mktemp("spark-state")
    cfg = load_config(environ={}, overrides={"state_dir": str(state),
                                             "spark": {"master": "local[2]", "driver_memory": "1g",
                                                       "shuffle_partitions": 2}})
    session = build_session(cfg, "tally-unit-tests", with_jars=False)
    yield session
    session.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, tables and prefixes a test owns."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("TALLY_"):
            monkeypatch.delenv(key)
