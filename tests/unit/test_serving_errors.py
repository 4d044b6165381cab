"""Error bodies name the dependency and the failure, never a local path or a stack: the lake's
root gone, a view's files gone, Kafka and HBase unreachable (closed ports on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import shutil
import time

from schemas.config import load_config
from serving_layer.app import create_app
from tests.unit.test_serving_app import D0, D0_MS, DAY, MIN, iso, publish

PATHS = re.compile(r"(?:file:/+|(?<![\w:/.\-]))/(?:tmp|work|root|home|usr|var)\b")


def assert_no_path(body: str, tmp_path) -> None:
    assert str(tmp_path) not in body and not PATHS.search(body), body
    assert "Traceback" not in body and "\tat " not in body, body


def test_no_path_in_any_error_body(tmp_path):
    cfg = load_config(environ={}, overrides={
        "state_dir": str(tmp_path), "batch": {"horizon_start": D0},
        "kafka": {"bootstrap_servers": "127.0.0.1:1"}, "hbase": {"port": 1},
        "serve": {"catalog_ttl_s": 0.0, "kafka_timeout_s": 1.0, "hbase_timeout_ms": 300,
                  "hbase_retry_s": 0.0}})
    publish(cfg, D0, "20251125T000000Z-aaaaaaaa", [("v1", "view", D0_MS + 5 * MIN, 3, 30)])
    c = create_app(cfg).test_client()
    day = {"from": iso(D0_MS), "to": iso(D0_MS + DAY), "granularity": "day"}
    answers = []

    def get(path, **q):
        r = c.get(path, query_string=q)
        answers.append((path, r.status_code, r.get_data(as_text=True)))
        return r

    # HBase down: the speed part of a range after the horizon.
    assert get("/v1/videos/v1/counts", **{**day, "to": iso(D0_MS + 2 * DAY)}).json["partial"]
    assert get("/v1/videos/v1/counts", **{**day, "from": iso(D0_MS + DAY),
                                          "to": iso(D0_MS + 2 * DAY)}).status_code == 503
    # A view whose files are gone (the day view is kept by now: the hour and minute views).
    shutil.rmtree(tmp_path / "lake" / "views" / f"date={D0}")
    assert get("/v1/videos/v1/counts", **{**day, "granularity": "hour"}).status_code == 503
    assert get("/v1/top", **{**day, "to": iso(D0_MS + DAY - MIN)}).status_code == 503
    # The lake's root gone; Kafka and HBase unreachable.
    shutil.rmtree(tmp_path / "lake")
    assert get("/v1/videos/v1/counts", **day).status_code == 503
    r = get("/readyz")
    assert r.status_code == 503 and not any(d["ready"] for d in r.json["dependencies"].values())
    event = {"event_id": "e1", "video_id": "v1", "event_type": "view",
             "ts": iso(int(time.time() * 1000))}
    r = c.post("/v1/events", data=json.dumps(event), content_type="application/json")
    assert r.status_code == 503 and r.json["dependency"] == "kafka"
    answers.append(("/v1/events", r.status_code, r.get_data(as_text=True)))
    for path, status, body in answers:
        if status >= 400:
            assert json.loads(body)["error"], (path, body)
        assert_no_path(body, tmp_path)
