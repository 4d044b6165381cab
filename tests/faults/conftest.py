"""The fault-injection suite: each case injects one fault into the real local stack on 127.0.0.1
(a killed process, a stopped server, a cut connection, poison input) and checks what the platform
answers against the generator's ground truth, with lost = 0 and duplicated = 0 unless the case
says otherwise. The shared fixtures (`cfg`, `stack`, `spark_reader`, `unique`) are in
tests/conftest.py; the drivers for the stream and the batch in tests/integration/{speedkit,batchkit}.py.
"""

import pytest


@pytest.fixture(scope="session")
def serving_world(stack, tmp_path_factory, spark_reader):
    """The serving tests' world (tests/integration/servekit.py), shared by the serving-side
    cases: their checks hold whatever the horizon (merged counts equal the truth either way)."""
    from tests.integration.servekit import build_world

    return build_world(stack, tmp_path_factory.mktemp("serving-faults"), spark_reader,
                       events=8000, videos=60)
