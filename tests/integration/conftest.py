"""Integration tests talk to the real local stack started by `make test` (`tally stack up`).

Each test owns its names (topic, table, bucket, prefix) so no test depends on another or on an
earlier run. A stack that is not healthy fails the tests with the reason; nothing is skipped.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest


@pytest.fixture(scope="session")
def serving_world(stack, tmp_path_factory):
    """A read-only world for the serving layer's schema and page tests (test_serving.py builds
    its own with the real batch job, and moves its horizon): its own topic, HBase tables and
    lake; three generated days from today - 3, the first published as batch views, the speed
    views holding all three (wrong before the horizon). Nothing may change it; requests that
    write (POST /v1/events) only reach its topic, which nothing consumes."""
    from tests.integration.servekit import build_published_world
    from tests.integration.speedkit import make_installation

    first = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=3)
    root = tmp_path_factory.mktemp("serving-world")
    inst = make_installation(stack, root, uuid.uuid4().hex[:10],
                             TALLY_BATCH__HORIZON_START=first.isoformat())
    return build_published_world(inst, first, days=3, batch_days=1, events=4000, videos=30,
                                 seed=11)
