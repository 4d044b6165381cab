"""The examples of docs/api.md, run as written against a real app over HTTP.

Every example there is a fenced ``sh`` block holding one ``curl`` command, followed by a fenced
``http`` block: the answer (status line, the headers worth showing, a blank line, the body). Each
command is parsed as a shell would split it (:func:`shlex.split`) and sent as curl would send it
(the options below, nothing else); two substitutions, both checked: ``http://localhost:8000`` (it
must be the address of every example) becomes the test server's address, and ``$TALLY_API_KEY``
(in double quotes, as the page tells readers to write it) the key the test app is configured with.

The app serves a world of its own whose content the page's numbers come from (:data:`MINUTES`,
:data:`VERSIONS`, :data:`PROGRESS`): its own topic, HBase tables and lake, so it pollutes nothing
and its answers do not depend on the day the test runs (every query lies before the horizon).

Answers are compared so: the status code; each documented header, by value; a JSON body key for
key (every object's key set exactly), value for value, where the string ``"..."`` stands for any
value and an array ending in ``"..."`` for one that goes on; a text body line for line, each
documented line present (a line ending in ``...`` as a prefix).
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from schemas.event import parse_rfc3339_ms
from tests.integration.servekit import serving

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "api.md"
DOC_BASE = "http://localhost:8000"
KEY_VAR = "$TALLY_API_KEY"
KEY = "docs-example-key-0123456789"
ANY = "..."

# The world of the examples: two published days (horizon 2026-11-28T00:00:00Z), their versions
# fixed, and the speed layer's progress record. (video, event type, minute, count, watch_ms).
MINUTES = {
    "2026-11-26": [
        ("my-video", "view", "2026-11-26T09:15:00Z", 3, 12_000),
        ("my-video", "view", "2026-11-26T10:40:00Z", 2, 5_400),
        ("my-video", "like", "2026-11-26T09:16:00Z", 1, 0),
        ("launch-trailer", "view", "2026-11-26T12:00:00Z", 7, 70_000),
        ("cat-clip", "view", "2026-11-26T18:20:00Z", 1, 3_000),
    ],
    "2026-11-27": [
        ("my-video", "view", "2026-11-27T08:05:00Z", 4, 20_000),
        ("launch-trailer", "view", "2026-11-27T13:30:00Z", 5, 41_000),
    ],
}
VERSIONS = {"2026-11-26": "20261127T021500Z-3f9a1c2e", "2026-11-27": "20261128T021500Z-8b04d7e1"}
PROGRESS = {"max_event_time": "2026-11-28T10:00:00.000Z", "watermark": "2026-11-28T09:50:00.000Z",
            "updated_at": "2026-11-28T10:00:05.000Z", "dropped_late": 0}


@dataclass
class Example:
    line: int  # of the command in the page
    command: str
    status: int
    headers: dict[str, str]
    body: str


def examples(text: str) -> list[Example]:
    """The page's examples; every ``sh`` block must be one, followed by its answer."""
    out = []
    blocks = list(re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, re.S | re.M))
    for i, m in enumerate(blocks):
        if m.group(1) != "sh":
            continue
        line = text.count("\n", 0, m.start()) + 2
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        assert nxt is not None and nxt.group(1) == "http" and \
            not text[m.end():nxt.start()].strip(), f"api.md:{line}: no ```http answer right after"
        command = m.group(2).replace("\\\n", " ").strip()
        assert command.startswith("curl ") and "\n" not in command, \
            f"api.md:{line}: an example is one curl command"
        head, _, body = nxt.group(2).partition("\n\n")
        status_line, *header_lines = head.splitlines()
        sm = re.fullmatch(r"HTTP/1\.1 (\d{3}) [A-Za-z ]+", status_line)
        assert sm, f"api.md:{line}: the answer starts with a status line, got {status_line!r}"
        headers = dict(h.split(": ", 1) for h in header_lines)
        out.append(Example(line, command, int(sm.group(1)), headers, body.strip()))
    return out


def to_request(command: str, base: str) -> requests.Request:
    """The request curl sends for ``command`` (options -s, -i, -X, -H, -d), the two
    substitutions made."""
    assert command.count(DOC_BASE) >= 1 and "127.0.0.1" not in command, command
    # A real shell expands the key only outside single quotes: the page writes it in double ones.
    assert all(KEY_VAR not in part for part in re.findall(r"'[^']*'", command)), command
    args = shlex.split(command)[1:]
    method, headers, data, url = None, {}, None, None
    while args:
        a = args.pop(0)
        if a in ("-s", "-i", "-si", "-is"):
            continue
        if a == "-X":
            method = args.pop(0)
        elif a == "-H":
            name, _, value = args.pop(0).partition(":")
            headers[name.strip()] = value.strip().replace(KEY_VAR, KEY)
        elif a in ("-d", "--data"):
            data = args.pop(0)
        elif not a.startswith("-") and url is None:
            url = a
        else:
            raise AssertionError(f"a curl option the test does not send: {a!r} in {command}")
    assert url and url.startswith(DOC_BASE + "/"), command
    if data is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")  # curl's -d
    return requests.Request(method or ("POST" if data is not None else "GET"),
                            base + url[len(DOC_BASE):], headers=headers, data=data)


def match(doc: Any, got: Any, where: str = "body") -> None:
    """``got`` is what ``doc`` shows (see the module's docstring)."""
    if doc == ANY:
        return
    if isinstance(doc, dict):
        assert isinstance(got, dict) and set(doc) == set(got), \
            f"{where}: keys {sorted(got) if isinstance(got, dict) else got!r}, the page shows " \
            f"{sorted(doc)}"
        for k in doc:
            match(doc[k], got[k], f"{where}.{k}")
    elif isinstance(doc, list):
        assert isinstance(got, list), f"{where}: {got!r}, the page shows a list"
        goes_on = bool(doc) and doc[-1] == ANY
        shown = doc[:-1] if goes_on else doc
        assert len(got) >= len(shown) if goes_on else len(got) == len(shown), \
            f"{where}: {len(got)} items, the page shows {len(doc)}"
        for i, d in enumerate(shown):
            match(d, got[i], f"{where}[{i}]")
    else:
        assert doc == got and type(doc) is type(got), f"{where}: {got!r}, the page shows {doc!r}"


def check(ex: Example, resp: requests.Response) -> None:
    where = f"api.md:{ex.line}: {ex.command}"
    assert resp.status_code == ex.status, f"{where}: {resp.status_code} {resp.text[:300]}"
    for name, value in ex.headers.items():
        assert resp.headers.get(name) == value or (value == ANY and name in resp.headers), \
            f"{where}: header {name}: {resp.headers.get(name)!r}, the page shows {value!r}"
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        match(json.loads(ex.body), resp.json(), where)
    else:
        lines = resp.text.splitlines()
        for doc_line in ex.body.splitlines():
            if doc_line.endswith(ANY):
                assert any(x.startswith(doc_line[:-len(ANY)]) for x in lines), \
                    f"{where}: no line starts with {doc_line[:-len(ANY)]!r}"
            else:
                assert doc_line in lines, f"{where}: no line {doc_line!r}"


def test_the_parser_and_the_comparison_can_fail():
    """The comparison rejects what differs (so a passing page says something)."""
    match({"a": [1, ANY], "b": ANY}, {"a": [1, 2, 3], "b": None})
    for doc, got in [({"a": 1}, {"a": 1, "b": 2}), ({"a": 1}, {"a": 2}), ([1, 2], [1]),
                     ([1], [1, 2]), ({"a": 1}, {"a": 1.0}), ({"a": True}, {"a": 1})]:
        with pytest.raises(AssertionError):
            match(doc, got)
    req = to_request(f"curl -s -i -X POST {DOC_BASE}/v1/events -H \"X-API-Key: {KEY_VAR}\" "
                     "-H 'Content-Type: application/json' -d '{\"a\": 1}'", "http://h:1")
    assert (req.method, req.url, req.headers["X-API-Key"], req.data) == \
        ("POST", "http://h:1/v1/events", KEY, '{"a": 1}')
    for bad in [f"curl -s -k {DOC_BASE}/healthz", "curl -s http://127.0.0.1:8000/healthz",
                f"curl -s {DOC_BASE}/v1/top -H 'X-API-Key: {KEY_VAR}'"]:
        with pytest.raises(AssertionError):
            to_request(bad, "http://h:1")


@pytest.fixture(scope="module")
def docs_app(stack, tmp_path_factory):
    """The app of the examples on a local port: keys required for reads and writes."""
    from serving_layer.app import create_app
    from speed_layer.store import HBaseSpeedStore
    from tally.devstack.worlds import publish_minutes
    from tests.integration.speedkit import make_installation

    root = tmp_path_factory.mktemp("api-docs")
    inst = make_installation(stack, root, uuid.uuid4().hex[:10],
                             TALLY_BATCH__HORIZON_START=min(MINUTES))
    for day, rows in MINUTES.items():
        rows_ms = [(v, t, parse_rfc3339_ms(m), c, w) for v, t, m, c, w in rows]
        publish_minutes(inst.cfg, day, rows_ms, version=VERSIONS[day])
    HBaseSpeedStore(inst.cfg).write_progress(PROGRESS)
    app = create_app(inst.cfg.replace(serve={"api_keys": (KEY,), "read_requires_key": True}))
    with serving(app) as base:
        yield base


def test_every_example_of_the_page_answers_as_shown(docs_app):
    text = PAGE.read_text(encoding="utf-8")
    found = examples(text)
    assert len(found) >= 10, f"api.md shows only {len(found)} examples"
    seen = set()
    with requests.Session() as session:
        for ex in found:
            req = to_request(ex.command, docs_app)
            seen.add((req.method, req.url.split("?")[0][len(docs_app):]))
            check(ex, session.send(session.prepare_request(req), timeout=30, allow_redirects=False))
    for endpoint in [("POST", "/v1/events"), ("GET", "/v1/videos/my-video/counts"),
                     ("GET", "/v1/top"), ("GET", "/healthz"), ("GET", "/readyz"),
                     ("GET", "/metrics"), ("GET", "/openapi.json")]:
        assert endpoint in seen, f"api.md has no example of {endpoint}"
