"""Schemathesis against ``/openapi.json``: generated requests for every operation, run in process
through the app's WSGI interface against the real backends, all of them up, in the session's
read-only ``serving_world`` (its own topic, HBase table prefix and lake: it pollutes nothing).

Checks: no 5xx, every status, content type, header and body conforms to the document, and data
the document forbids is rejected with a 4xx (so the document is not looser than the app). Not
checked: that everything the document allows is accepted — a document cannot say ``from`` <
``to`` or bound a range's length, which the app answers with a 400 naming the parameter.

The app runs as an operator configures it: API keys required for reads and writes and a Host
name of its own; every case is sent with that key and Host (so the generated ones reach the
handlers: at least half of each operation's cases must, counted by wrapping the views).

Times are generated near the world's days (so many queries straddle the batch horizon and read
both layers) as well as anywhere RFC 3339 can write. Each parametrised operation must see at
least ``MIN_CASES`` generated cases; the operations without parameters have one possible request.
"""

from __future__ import annotations

import collections
import datetime as dt

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.formats import get_default_format_strategies

from schemas.config import load_config
from serving_layer.openapi import document
from serving_layer.params import ParamError, parse_time

MIN_CASES = 1000
CASES: collections.Counter = collections.Counter()
STATUSES: collections.Counter = collections.Counter()
SOURCES: collections.Counter = collections.Counter()
REACHED: collections.Counter = collections.Counter()
KEY = "schema-test-key-0123456789"
HEADERS = {"X-API-Key": KEY, "Host": "tally.test:8000"}
SERVE = {"api_keys": (KEY,), "read_requires_key": True, "allowed_hosts": ("tally.test",)}
_reached: list[str] = []
PARAMETRISED = {"GET /v1/videos/{video_id}/counts", "GET /v1/top", "POST /v1/events"}


def _near_times(horizon: int) -> st.SearchStrategy[str]:
    """RFC 3339 instants around the batch horizon (minutes to a day and a half away, so ranges
    straddle it and most stay short), in the forms clients write (Z or an offset, with or
    without a fraction)."""

    def render(ms: int, offset_min: int, frac: int) -> str:
        local = dt.datetime.fromtimestamp(ms / 1000, dt.timezone(dt.timedelta(minutes=offset_min)))
        text = local.strftime("%Y-%m-%dT%H:%M:%S")
        if frac:
            text += f".{local.microsecond:06d}"[: frac + 1]
        z = local.strftime("%z")
        return text + ("Z" if offset_min == 0 else f"{z[:3]}:{z[3:]}")

    scale = st.sampled_from([10 * 60_000, 3_600_000, 6 * 3_600_000, 36 * 3_600_000])
    offset = scale.flatmap(lambda s: st.integers(-s, s))
    aligned = offset.map(lambda o: horizon + o // 3_600_000 * 3_600_000)
    near = st.builds(render, st.one_of(aligned, offset.map(lambda o: horizon + o)),
                     st.sampled_from([0, 0, 0, 60, -330, 14 * 60 - 1]), st.sampled_from([0, 3, 6]))
    # The ends of what the API takes (and just past them).
    edges = st.sampled_from(["2000-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z",
                             "9999-12-30T23:59:59.999Z", "9999-12-31T00:00:00Z",
                             "9999-12-31T00:00:00.001Z", "9999-12-31T23:59:59.999Z"])
    return st.one_of(near, near, near, edges)


CONFIG = SchemathesisConfig.from_dict({"checks": {
    # The contract's 413 (too many events) is a rejection too.
    "negative_data_rejection": {"expected-statuses": [400, 401, 404, 405, 413, 415, 429]},
    "positive_data_acceptance": {"enabled": False}}})
# The document of the default configuration: the app under test must serve exactly this one
# (checked in the fixture), so the generated cases are those of what it really serves.
schema = schemathesis.openapi.from_dict(
    document(load_config(environ={}, overrides={"serve": SERVE})), config=CONFIG)


@schema.hook
def flatmap_query(context, query):
    """Queries whose ``from`` and ``to`` are both times get them in order: the document cannot
    say ``from`` < ``to``, and without this most valid-looking queries would be 400s."""
    try:
        lo, hi = parse_time(query.get("from"), "from"), parse_time(query.get("to"), "to")
    except (ParamError, AttributeError, TypeError):
        return st.just(query)
    if lo == hi:  # Hypothesis likes drawing the same value twice: also try a range after it
        return st.sampled_from([query, {**query, "to": str(hi + 3_600_000)},
                                {**query, "to": str(hi + 3 * 86_400_000)}])
    return st.just({**query, "from": query["to"], "to": query["from"]} if lo > hi else query)


@pytest.fixture(scope="module")
def app(serving_world):
    from serving_layer.app import create_app

    # The world's own horizon (not one computed from today's date here: a run may cross midnight).
    app = create_app(serving_world.inst.cfg.replace(serve=SERVE))
    assert app.test_client().get("/openapi.json", headers=HEADERS).json == schema.raw_schema
    for name, view in list(app.view_functions.items()):
        def counted(*args, _view=view, _name=name, **kwargs):
            _reached.append(_name)
            return _view(*args, **kwargs)
        app.view_functions[name] = counted
    default = get_default_format_strategies()["date-time"]
    schemathesis.openapi.format("date-time", st.one_of(*[_near_times(serving_world.horizon_ms)] * 4, default))
    yield app
    from schemathesis.specs.openapi import unregister_string_format

    unregister_string_format("date-time")


@schema.parametrize()
@settings(max_examples=MIN_CASES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_generated_requests_conform(case, app):
    _reached.clear()
    # The schema's own app: the checks that re-send a case (without its key, say) reach it too.
    case.operation.schema.app = app
    response = case.call_and_validate(app=app, headers=HEADERS)
    assert response.status_code < 500, response.text  # all dependencies are up: not even a 503
    CASES[case.operation.label] += 1
    REACHED[case.operation.label] += bool(_reached)
    STATUSES[(case.operation.label, response.status_code)] += 1
    if response.status_code == 200 and case.method == "GET" and case.path.endswith("/counts"):
        SOURCES.update(b["source"] for b in response.json()["buckets"])


def test_every_operation_saw_enough_cases():
    assert CASES, "run together with test_generated_requests_conform"
    short = {op: n for op, n in CASES.items() if op in PARAMETRISED and n < MIN_CASES}
    assert not short, f"operations with fewer than {MIN_CASES} generated cases: {short} ({CASES})"
    assert PARAMETRISED <= set(CASES), CASES
    # The generated times reach the merge: answers with buckets from both layers.
    for op in ("GET /v1/videos/{video_id}/counts", "GET /v1/top"):
        assert STATUSES[(op, 200)] >= 50, STATUSES
    assert SOURCES["batch"] >= 100 and SOURCES["speed"] >= 100, SOURCES
    # The key and Host let the cases through authentication and the Host check.
    # (Of the operations without parameters most cases are other methods on their path: 405.)
    few = {op: (REACHED[op], n) for op, n in CASES.items()
           if op in PARAMETRISED and REACHED[op] * 2 < n}
    assert not few, f"operations whose cases mostly stopped before a handler: {few}"
    print(dict(sorted(STATUSES.items())), dict(SOURCES), dict(REACHED))
