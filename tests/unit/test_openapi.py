"""The OpenAPI document against the contract: the Event schema has the contract's fields and
required fields, is never stricter than the contract's validator (what the schema refuses, the
validator refuses) and refuses every bad event it can express; the body of POST /v1/events is
refused by the schema exactly where the app refuses it; every operation has a unique camelCase
operationId and declared tags."""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest

from schemas.config import load_config
from schemas.errors import ValidationError
from schemas.event import FIELDS, EventValidator, json_ok
from serving_layer.openapi import document
from tests.unit.bad_events import BAD, CLOCK, GOOD, GOOD_CASES

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
CAMEL = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*")
# The bad events the schema cannot refuse, each for a rule JSON Schema cannot state: a float
# with an integral value is an "integer" to JSON Schema; an instant's bounds as a string and
# against the receiving clock; the JSON limits below the top-level keys. The descriptions say so.
BEYOND_JSON_SCHEMA = {
    "ts float": "ts: must be an RFC 3339",
    "watch_ms 1.0": "watch_ms: must be an integer",
    "ts ancient": "ts: must not be before",
    "ts future": "ts: must not be more than",
    "ts future string": "ts: must not be more than",
}


def _cfg(**serve):
    return load_config(environ={}, overrides={"serve": serve} if serve else {})


def _validator(schema, doc):
    """A validator of ``schema`` whose references resolve in ``doc``."""
    return jsonschema_rs.validator_for({**schema, "components": doc["components"]},
                                       validate_formats=True)


def _operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", op


def test_the_event_schema_has_the_contracts_fields():
    doc = document(_cfg())
    event = doc["components"]["schemas"]["Event"]
    assert list(event["properties"]) == [f.name for f in FIELDS]
    assert set(event["required"]) == {f.name for f in FIELDS if f.required}
    # The contract's required fields, as its validator tells them: dropping one is refused.
    validator = EventValidator()
    required = set()
    for name in GOOD:
        try:
            validator.validate({k: v for k, v in GOOD.items() if k != name}, CLOCK)
        except ValidationError:
            required.add(name)
    assert set(event["required"]) == required == {"event_id", "video_id", "event_type", "ts"}


def test_the_event_types_and_the_batch_limit_come_from_the_config():
    doc = document(_cfg(max_events=7).replace(events={"types": ("play", "pause")}))
    event = doc["components"]["schemas"]["Event"]
    assert event["properties"]["event_type"]["enum"] == ["play", "pause"]
    body = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    array = [s for s in body["schema"]["oneOf"] if s.get("type") == "array"]
    assert [(a["minItems"], a["maxItems"]) for a in array] == [(1, 7)]


def _verdicts(cases):
    """(name, value, validator's reason or None) of the cases that are JSON within the limits."""
    validator = EventValidator()
    out = []
    for name, raw, *_ in cases:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # not JSON (or deeper than json.loads goes): nothing for a schema to judge
        if not json_ok(value):
            continue  # the JSON limits: stated in the Event's description, beyond the schema
        try:
            validator.validate(value, CLOCK)
            out.append((name, value, None))
        except ValidationError as exc:
            out.append((name, value, str(exc)))
    return out


def test_the_event_schema_agrees_with_the_validator():
    doc = document(_cfg())
    schema = _validator(doc["components"]["schemas"]["Event"], doc)
    cases = _verdicts(BAD + GOOD_CASES)
    assert len(cases) > 60
    # Never stricter: every event the validator takes, the schema takes.
    stricter = [name for name, value, why in cases if why is None and not schema.is_valid(value)]
    assert not stricter, f"the Event schema refuses events the validator accepts: {stricter}"
    # As strict as JSON Schema can say: every other bad event is refused.
    looser = {name: why for name, value, why in cases if why is not None and schema.is_valid(value)}
    assert set(looser) == set(BEYOND_JSON_SCHEMA), looser
    for name, why in looser.items():
        assert why.startswith(BEYOND_JSON_SCHEMA[name]), (name, why)


@pytest.mark.parametrize("field", [f.name for f in FIELDS])
def test_each_fields_edges_agree(field):
    """Values at and beyond each field's edges, the validator's verdict and the schema's."""
    doc = document(_cfg())
    schema = _validator(doc["components"]["schemas"]["Event"], doc)
    validator = EventValidator()
    probes = [None, "", "a", "A-z_0.9:", "a" * 64, "a" * 65, "é", "a\n", "view", "View", 0, -1, 1,
              86_400_000, 86_400_001, 2**31 - 1, 2**31, 946_684_800_000, 946_684_799_999, 2**63,
              1.5, True, [], {}, "2026-11-17T10:15:00Z", "2026-11-17t10:15:00.123456789+05:30",
              "2026-11-17T10:15:60Z", "2026-11-17 10:15:00Z", "1795000000000"]
    for probe in probes:
        event = {**GOOD, field: probe}
        try:
            validator.validate(event, CLOCK)
            why = None
        except ValidationError as exc:
            why = str(exc)
        valid = schema.is_valid(event)
        assert valid or why is not None, f"{field}={probe!r}: the schema refuses what is accepted"
        assert not valid or why is None or why.startswith("ts: must not be before"), \
            f"{field}={probe!r}: the schema takes what the validator refuses ({why})"


class FakeProducer:
    def __init__(self):
        self.sent = []

    def send_raw(self, value, key):
        self.sent.append((key, value))

    def flush(self, timeout_s=None):
        return len(self.sent)


def test_the_body_schema_refuses_what_the_app_refuses(tmp_path):
    """The app takes an array with at least one valid event (the others answered in
    `rejected`): the body's schema says exactly that, and refuses what the app answers 4xx."""
    from serving_layer.app import create_app

    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path),
                                              "serve": {"max_events": 3}})
    doc = document(cfg)
    body = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    schema = _validator(body["schema"], doc)
    app = create_app(cfg)
    app.extensions["tally"]["resources"]._producer = FakeProducer()
    client = app.test_client()
    good = dict(GOOD, ts="2026-11-17T10:15:00Z")
    bad = dict(GOOD, video_id="no spaces")
    bodies = {"one": good, "one bad": bad, "only good": [good, good], "mixed": [good, bad],
              "mixed, bad first": [bad, bad, good], "all bad": [bad, bad], "empty": [],
              "too many": [good] * 4, "a string": "view", "null": None, "a bad item": [good, 7]}
    verdicts = {}
    for name, value in bodies.items():
        status = client.post("/v1/events", data=json.dumps(value),
                             content_type="application/json").status_code
        assert status in (202, 400, 413), (name, status)
        verdicts[name] = (status == 202, schema.is_valid(value))
    assert all(app_takes == schema_takes for app_takes, schema_takes in verdicts.values()), verdicts
    assert verdicts["mixed"] == (True, True) and verdicts["all bad"] == (False, False)


def test_every_operation_has_a_unique_camel_case_id_and_declared_tags():
    doc = document(_cfg(api_keys=("k" * 24,)))
    declared = [t["name"] for t in doc["tags"]]
    assert len(declared) == len(set(declared)) and all(t.get("description") for t in doc["tags"])
    ops = dict(_operations(doc))
    assert {"POST /v1/events", "GET /v1/videos/{video_id}/counts", "GET /v1/top", "GET /healthz",
            "GET /readyz", "GET /metrics", "GET /openapi.json"} <= set(ops)
    ids = [op.get("operationId") for op in ops.values()]
    assert all(isinstance(i, str) and CAMEL.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids
    untagged = {label: op.get("tags") for label, op in ops.items()
                if not op.get("tags") or not set(op["tags"]) <= set(declared)}
    assert not untagged, f"operations without declared tags: {untagged}"
    used = {t for op in ops.values() for t in op["tags"]}
    assert used == set(declared), f"declared tags no operation uses: {set(declared) - used}"


def test_every_route_of_the_app_is_in_the_document(tmp_path):
    """The document lists what the app routes (so a new endpoint gets an id and tags too)."""
    from serving_layer.app import create_app

    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path)})
    app = create_app(cfg)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes |= {f"{m} {path}" for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == set(dict(_operations(document(cfg)))), routes
