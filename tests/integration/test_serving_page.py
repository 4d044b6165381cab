"""The dashboard page (``GET /``) in headless Chromium against the real backends: the chart and
the top list show the API's numbers, which are the truth's.

The world is the session's ``serving_world`` (tests/integration/conftest.py): three generated
days, the first published as batch views, all of them in the speed views (wrong before the
horizon, so a bar drawn from the wrong side shows). The page is served over HTTP; the test reads what it drew from the DOM (bar
heights, classes, data attributes, the table's text) and compares it with the API's JSON and
with the truth. Then it selects another video by clicking its row in the top list.

Last, the page against forged answers: what it did not write itself (batch versions from the
lake's publication entries, video ids, warnings, ...) shows as text, whatever HTML it holds.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from schemas.event import format_ms
from tests.cdp import Browser
from tests.integration.servekit import PROGRESS, serving

HOUR = 3_600_000
# The chart's geometry (dashboard.py): plot from x = L to W - R.
W, L, R = 1000, 56, 8

BARS = """[...document.querySelectorAll('#chart rect.bar')].map(r => ({
  start: r.dataset.start, count: r.dataset.count === '' ? null : Number(r.dataset.count),
  source: r.dataset.source, cls: r.classList[1], height: r.height.baseVal.value,
  fill: getComputedStyle(r).fill}))"""
TOP_ROWS = """[...document.querySelectorAll('#top tbody tr')].map(tr =>
  [...tr.cells].map(td => td.textContent))"""


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def site(serving_world, browser):
    from serving_layer.app import create_app

    app = create_app(serving_world.inst.cfg)
    with serving(app) as url:
        yield serving_world, app.test_client(), url, browser


def stable(body):
    """An answer without what changes with the clock (the speed lag)."""
    return {**body, "freshness": {**body["freshness"], "lag_seconds": None}}


def check_chart(browser, api, world, video, lo, hi):
    """The bars drawn are the API's buckets and the truth's, one per bucket, coloured by
    source, heights in proportion, the horizon line where the horizon is."""
    r = api.get(f"/v1/videos/{video}/counts", query_string={
        "from": format_ms(lo), "to": format_ms(hi), "granularity": "hour", "event_type": "view"})
    assert r.status_code == 200, r.json
    body = r.json
    assert stable(browser.evaluate("window.tally.counts")) == stable(body)
    bars = browser.evaluate(BARS)
    want = world.expected_buckets(video, "view", lo, hi, HOUR)
    assert [b["start"] for b in bars] == [format_ms(b) for b in sorted(want)] == \
        [b["start"] for b in body["buckets"]]
    assert [b["count"] for b in bars] == [b["count"] for b in body["buckets"]] == \
        [want[b][0] for b in sorted(want)]
    assert [b["source"] for b in bars] == [b["cls"] for b in bars] == \
        ["batch" if b < world.horizon_ms else "speed" for b in sorted(want)]
    fills = {b["cls"]: b["fill"] for b in bars}
    assert len(fills) == 2 and fills["batch"] != fills["speed"], fills
    tallest = max(bars, key=lambda b: b["count"])
    assert tallest["count"] > 0
    for b in bars:  # heights in proportion to the counts
        assert b["height"] / tallest["height"] == pytest.approx(b["count"] / tallest["count"],
                                                                abs=1e-3)
    x = browser.evaluate("Number(document.getElementById('horizon').getAttribute('x1'))")
    assert x == pytest.approx(L + (W - L - R) * (world.horizon_ms - lo) / (hi - lo), abs=0.01)
    assert browser.evaluate("document.getElementById('total').textContent") == \
        f"{body['total']:,}"
    return body


def check_top(browser, api, world, lo, hi, selected):
    r = api.get("/v1/top", query_string={"from": format_ms(lo), "to": format_ms(hi), "k": 10,
                                         "event_type": "view"})
    assert r.status_code == 200 and r.json["exact"] is False
    assert stable(browser.evaluate("window.tally.top")) == stable(r.json)
    items = r.json["items"]
    assert items == world.expected_top("view", lo, hi, 10) and len(items) == 10
    rows = browser.evaluate(TOP_ROWS)
    assert [(int(rank), v, int(c.replace(",", ""))) for rank, v, c, _w in rows] == \
        [(i + 1, it["video_id"], it["count"]) for i, it in enumerate(items)]
    assert browser.evaluate("document.querySelector('#top tr.sel').dataset.video") == selected
    return items


def test_the_page_shows_the_apis_numbers(site):
    world, api, url, browser = site
    lo, hi = world.horizon_ms - 30 * HOUR, world.horizon_ms + 18 * HOUR
    query = urllib.parse.urlencode({"from": format_ms(lo), "to": format_ms(hi),
                                    "granularity": "hour"})
    browser.navigate(f"{url}/?{query}")
    browser.wait_for("window.tally.seq >= 1")
    assert browser.evaluate("window.tally.error") is None
    # No video given: the page shows the busiest one of the range.
    items = check_top(browser, api, world, lo, hi,
                      selected=browser.evaluate("window.tally.counts.video_id"))
    assert browser.evaluate("window.tally.counts.video_id") == items[0]["video_id"]
    check_chart(browser, api, world, items[0]["video_id"], lo, hi)
    fresh = browser.evaluate("document.getElementById('fresh').textContent")
    assert PROGRESS["max_event_time"] in fresh and format_ms(world.horizon_ms) in fresh
    # The event types offered are the API's (from its OpenAPI document).
    types = browser.evaluate("[...document.querySelector('select[name=event_type]').options]"
                             ".map(o => o.value)")
    assert types == list(world.inst.cfg.events.types)

    # Select another video: click its row in the top list.
    second = items[3]["video_id"]
    browser.evaluate(f"document.querySelector('#top tr[data-video={json.dumps(second)}]').click()")
    browser.wait_for("window.tally.seq >= 2")
    assert browser.evaluate("window.tally.error") is None
    body = check_chart(browser, api, world, second, lo, hi)
    assert body["video_id"] == second
    check_top(browser, api, world, lo, hi, selected=second)

    # A bad parameter: the API's 400 message is shown, nothing is invented.
    browser.evaluate("document.querySelector('input[name=from]').value = 'yesterday';"
                     "document.querySelector('button').click()")
    browser.wait_for("window.tally.seq >= 3")
    assert browser.evaluate("document.getElementById('err').textContent").startswith("from:")


def forged(name: str) -> str:
    """Text that runs script if a page writes it into the DOM as HTML (in text or attributes)."""
    return f"""{name}"'><img src=x onerror="(window.pwned=window.pwned||[]).push('{name}')">"""


def forged_api():
    """The page, and answers to what it fetches carrying HTML in every value the page shows."""
    from flask import Flask, jsonify

    from serving_layer.dashboard import PAGE

    app = Flask("forged")
    start = "2024-05-01T00:00:00Z"
    starts = [f"2024-05-01T{h:02d}:00:00Z" for h in range(3)]
    common = {"event_type": forged("event_type"), "from": start, "to": "2024-05-01T03:00:00Z",
              "batch_horizon": "2024-05-01T01:30:00Z",
              "batch_versions": {forged("day"): forged("version")},
              "pending_days": [forged("pending")], "pinned_days": [forged("pinned")],
              "freshness": {"speed_max_event_time": forged("max_event_time"), "lag_seconds": 5,
                            "speed_watermark": forged("watermark"),
                            "speed_updated_at": forged("updated_at"), "dropped_late": 0},
              "speed_unavailable": False, "warnings": [forged("warning")]}

    @app.get("/")
    def page():
        return PAGE

    @app.get("/openapi.json")
    def openapi():
        enum = ["view", forged("type")]
        return jsonify({"paths": {"/v1/top": {"get": {"parameters": [
            {"name": "event_type", "schema": {"enum": enum}}]}}}})

    @app.get("/v1/top")
    def top():
        return jsonify({**common, "exact": False, "items": [
            {"video_id": forged("video"), "count": 5, "watch_ms": 1000}]})

    @app.get("/v1/videos/<path:video>/counts")
    def counts(video):
        return jsonify({**common, "video_id": video, "granularity": "hour", "total": 7,
                        "watch_ms": 1000, "buckets": [
                            {"start": starts[0], "count": 3, "source": "batch"},
                            {"start": starts[1], "count": forged("count"),
                             "source": forged("source")},
                            {"start": starts[2], "count": None, "source": "none",
                             "unavailable": True}]})

    return app


def test_text_from_the_api_is_shown_as_text(browser):
    with serving(forged_api()) as url:
        browser.navigate(f"{url}/")
        browser.wait_for("window.tally.seq >= 1")
        assert browser.evaluate("window.tally.error") is None

        def text(selector):
            return browser.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})]"
                                    ".map(e => e.textContent)")

        # Nothing of it became markup ...
        assert browser.evaluate("document.querySelectorAll('img, [onerror]').length") == 0
        # ... and all of it is there, as text.
        fresh = text("#fresh dd")
        assert f"{forged('day')}: {forged('version')}" in fresh
        for name in ("max_event_time", "watermark", "updated_at", "pending", "pinned"):
            assert forged(name) in fresh, name
        assert text("#warnings") == [forged("warning")]
        assert browser.evaluate(TOP_ROWS) == [["1", forged("video"), "5", "1.0 s"]]
        assert browser.evaluate("document.querySelector('#top tbody tr').dataset.video") == \
            forged("video")
        assert browser.evaluate("[...document.querySelectorAll('#videos option')]"
                                ".map(o => o.value)") == [forged("video")]
        assert browser.evaluate("[...document.querySelectorAll('select[name=event_type] option')]"
                                ".map(o => o.value)") == ["view", forged("type")]
        bars = browser.evaluate(BARS)
        assert [b["source"] for b in bars] == ["batch", forged("source"), "none"]
        assert browser.evaluate("document.querySelectorAll('#chart rect.bar')[1].dataset.count") \
            == forged("count")
        assert forged("video") in text("#what")[0]
        titles = text("#chart rect.bar title")
        assert forged("source") in titles[1]
        assert browser.evaluate("document.getElementById('horizon') !== null")
        # A handler would run once its image failed to load: give it the time to.
        browser.evaluate("new Promise(r => setTimeout(r, 300))")
        assert browser.evaluate("window.pwned || null") is None
