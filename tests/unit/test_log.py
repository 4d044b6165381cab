"""Log lines: logfmt text that splits back into its pairs whatever the values hold, JSON lines,
the format chosen by --log-format over TALLY_LOG_FORMAT / log_format, and the API's opt-in
access log (one line per request, never the key)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import log
from schemas.config import load_config
from schemas.errors import DependencyError
from serving_layer import access
from serving_layer.app import create_app, key_buckets

# A logfmt pair: a bare value, or a double-quoted one with backslash escapes (a JSON string).
PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
AWKWARD = {
    "space": "a b",
    "empty": "",
    "quote": 'say "hi"',
    "backslash": "C:\\dir\\",
    "equals": "a=b",
    "newline": "one\ntwo\r\n",
    "tab": "x\ty",
    "control": "bell\x07",
    "separator": "line\u2028sep\x85",
    "unicode": "café ✓",
    "number": 42,
    "quote_only": '"',
}


def parse_logfmt(line: str) -> dict[str, str]:
    """The pairs of one logfmt line; the whole line must be pairs."""
    out, pos = {}, 0
    for m in PAIR.finditer(line):
        assert m.start() == pos, f"not logfmt at {pos}: {line[pos:pos + 40]!r}"
        key, value = m.group(1), m.group(2)
        assert key not in out, key
        out[key] = json.loads(value) if value.startswith('"') else value
        pos = m.end()
    assert pos == len(line), f"not logfmt at {pos}: {line[pos:pos + 40]!r}"
    return out


def record(msg: str = "view loaded", exc: bool = False, /, **fields) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError('bad "value"\nsecond line')
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("tally.serve", logging.WARNING, __file__, 1, msg, None, exc_info)
    rec.kv = fields
    return rec


def test_logfmt_round_trips_awkward_values():
    line = log.KeyValueFormatter().format(record('a "msg" = with\nnewline', False, **AWKWARD))
    assert "\n" not in line and len(line.splitlines()) == 1
    pairs = parse_logfmt(line)
    assert TS.match(pairs.pop("ts"))
    assert pairs.pop("level") == "WARNING" and pairs.pop("logger") == "tally.serve"
    assert pairs.pop("msg") == 'a "msg" = with\nnewline'
    assert pairs == {k: str(v) for k, v in AWKWARD.items()}
    # Safe values stay bare.
    assert " day=2025-11-24 " in log.KeyValueFormatter().format(record(day="2025-11-24", n=1))


def test_logfmt_fixed_keys_win_and_exceptions_stay_on_the_line():
    line = log.KeyValueFormatter().format(record("view loaded", True, msg="field", ts="t", level="l",
                                                 logger="x", exc="e"))
    assert len(line.splitlines()) == 1
    pairs = parse_logfmt(line)
    assert pairs["msg"] == "view loaded" and pairs["level"] == "WARNING"
    assert pairs["msg_"] == "field" and pairs["ts_"] == "t" and pairs["level_"] == "l"
    assert pairs["logger_"] == "x" and pairs["exc_"] == "e"
    assert pairs["exc"].startswith("Traceback") and 'ValueError: bad "value"\nsecond line' in pairs["exc"]


def test_json_lines_carry_the_fields():
    fmt = log.JsonFormatter()
    line = fmt.format(record("m\nx", True, msg="shadow", rows=3, ratio=0.5, ok=True,
                             missing=None, nan=float("nan"), day=object, **AWKWARD))
    assert len(line.splitlines()) == 1
    data = json.loads(line)
    assert list(data)[:4] == ["ts", "level", "logger", "msg"]
    assert TS.match(data["ts"]) and data["level"] == "WARNING" and data["logger"] == "tally.serve"
    assert data["msg"] == "m\nx" and data["msg_"] == "shadow"
    assert data["rows"] == 3 and data["ratio"] == 0.5 and data["ok"] is True
    assert data["missing"] is None and data["nan"] == "nan" and data["day"] == str(object)
    assert {k: data[k] for k in AWKWARD} == AWKWARD
    assert data["exc"].startswith("Traceback") and "ValueError" in data["exc"]


def test_setup_and_use_format_switch_the_handler(capsys):
    log.setup("INFO", fmt="json")
    log.kv(log.get("t"), logging.INFO, "one", level="field")
    log.use_format("text")
    log.kv(log.get("t"), logging.INFO, "two", n=2)
    first, second = capsys.readouterr().err.splitlines()
    assert json.loads(first)["msg"] == "one" and json.loads(first)["level_"] == "field"
    assert parse_logfmt(second)["msg"] == "two" and parse_logfmt(second)["n"] == "2"
    with pytest.raises(ValueError):
        log.setup("INFO", fmt="xml")


def test_initial_format():
    assert log.initial_format(None, {}) == "text"
    assert log.initial_format(None, {"TALLY_LOG_FORMAT": "json"}) == "json"
    assert log.initial_format(None, {"TALLY_LOG_FORMAT": "xml"}) == "text"
    assert log.initial_format("text", {"TALLY_LOG_FORMAT": "json"}) == "text"


# The format of `tally` -------------------------------------------------------------------------

def tally(tmp_path: Path, *args: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    # An unknown TALLY_* variable: a warning while the config is read.
    environ.update(TALLY_STATE_DIR=str(tmp_path / "state"), TALLY_NO_SUCH_SETTING="1", **env)
    res = subprocess.run([sys.executable, "-m", "tally.cli", "-v", *args, "config", "show"],
                         env=environ, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines, "no log line"
    return lines


def test_tally_logs_json_from_the_environment_and_the_flag_wins(tmp_path):
    for line in tally(tmp_path, TALLY_LOG_FORMAT="json"):
        data = json.loads(line)
        assert data["logger"] == "tally.config" and "TALLY_NO_SUCH_SETTING" in data["msg"]
    for line in tally(tmp_path, "--log-format", "text", TALLY_LOG_FORMAT="json"):
        assert parse_logfmt(line)["logger"] == "tally.config"
    for line in tally(tmp_path, "--log-format", "json"):
        assert json.loads(line)["level"] == "WARNING"
    for line in tally(tmp_path):
        assert parse_logfmt(line)["level"] == "WARNING"


def test_the_config_files_format_applies_after_it_is_read(tmp_path, capsys):
    from tally import cli

    path = tmp_path / "tally.toml"
    path.write_text('log_format = "json"\n')
    assert cli.main(["--config", str(path), "--state-dir", str(tmp_path / "s"), "config",
                     "show"]) == 0
    assert isinstance(logging.getLogger("tally").handlers[0].formatter, log.JsonFormatter)
    assert cli.main(["--config", str(path), "--state-dir", str(tmp_path / "s"), "config",
                     "show", "--log-format", "text"]) == 0
    assert isinstance(logging.getLogger("tally").handlers[0].formatter, log.KeyValueFormatter)


def test_the_jobs_take_log_format():
    from jobs import batch, stream

    for job in (batch, stream):
        with pytest.raises(SystemExit):
            job.main(["--log-format", "xml"])


# The access log --------------------------------------------------------------------------------

KEY = "secret-key-0123456789"
TOP = "/v1/top?k=0&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z"


@pytest.fixture
def access_level():
    before = access.ACCESS.level
    yield
    access.ACCESS.setLevel(before)


def client(tmp_path, fmt="json", **serve):
    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path), "log_format": fmt,
                                             "serve": serve})
    log.setup("WARNING", fmt=fmt)  # the default level: the access log shows anyway
    app = create_app(cfg)

    @app.get("/v1/down")
    def _down():
        raise DependencyError("hbase", "connection refused")

    @app.get("/v1/defect")
    def _defect():
        raise RuntimeError("bug")

    return app.test_client()


def test_the_access_log_has_one_line_per_request_and_never_the_key(tmp_path, capsys, access_level):
    c = client(tmp_path, access_log=True, api_keys=[KEY], read_requires_key=True)
    hdr = {"X-API-Key": KEY, "X-Request-Id": "req-1"}
    want = [
        (c.get(TOP + "&api_key=" + KEY, headers=hdr), 400),  # a parameter named like the key
        (c.get("/v1/nowhere?x=1", headers=hdr), 404),
        (c.get(TOP, headers={"X-API-Key": "invented-key-000000"}), 401),
        (c.get(TOP), 401),
        (c.get("/healthz", headers={"X-Request-Id": "bad id \"quoted\""}), 200),
        (c.get("/v1/down", headers=hdr), 503),
        (c.get("/v1/defect", headers=hdr), 500),
    ]
    assert [r.status_code for r, _ in want] == [s for _, s in want]
    err = capsys.readouterr().err
    assert KEY not in err and "invented-key" not in err
    lines = [json.loads(line) for line in err.splitlines()]
    access_lines = [d for d in lines if d["logger"] == "tally.access"]
    assert len(access_lines) == len(want)
    bucket = key_buckets([KEY])[KEY.encode()]
    for d, (resp, status) in zip(access_lines, want):
        assert d["level"] == "INFO" and d["msg"] == "request" and d["method"] == "GET"
        assert d["status"] == status and d["bytes"] == len(resp.data)
        assert isinstance(d["duration_ms"], (int, float)) and d["duration_ms"] >= 0
        assert d["client"] == "127.0.0.1"
    first, missing, invented, anonymous, health, down, defect = access_lines
    assert first["path"] == "/v1/top" and first["query"] == "api_key,from,k,to"
    assert first["key"] == bucket and first["request_id"] == "req-1"
    assert missing["path"] == "/v1/nowhere" and missing["query"] == "x"
    assert invented["key"] == anonymous["key"] == health["key"] == "-"
    assert "request_id" not in health and health["query"] == ""
    assert down["key"] == bucket and defect["path"] == "/v1/defect"


def test_the_access_log_is_logfmt_in_text_mode(tmp_path, capsys, access_level):
    c = client(tmp_path, fmt="text", access_log=True)
    assert c.get("/v1/videos/a%20b%22c/counts?from=x").status_code == 400
    lines = [parse_logfmt(line) for line in capsys.readouterr().err.splitlines()]
    assert [d["path"] for d in lines if d["logger"] == "tally.access"] == ['/v1/videos/a b"c/counts']


def test_the_access_log_is_off_by_default(tmp_path, capsys, access_level):
    c = client(tmp_path)
    assert c.get(TOP).status_code == 400 and c.get("/v1/nowhere").status_code == 404
    assert "tally.access" not in capsys.readouterr().err


def test_a_failing_access_log_leaves_the_response_alone(tmp_path, capsys, access_level, monkeypatch):
    c = client(tmp_path, access_log=True)

    def broken(resp, client):
        raise RuntimeError("cannot describe")

    monkeypatch.setattr(access, "fields", broken)
    assert c.get("/healthz").status_code == 200
    assert c.get("/v1/nowhere").status_code == 404
    warned = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [d["msg"] for d in warned] == ["access log: could not describe GET /healthz",
                                          "access log: could not describe GET /v1/nowhere"]


def test_gunicorns_own_lines_take_the_format(capsys):
    from gunicorn.config import Config

    from serving_layer.server import gunicorn_logger, gunicorn_settings

    cfg = load_config(environ={}, overrides={"log_format": "json"})
    settings = gunicorn_settings(cfg, "127.0.0.1", 8000)
    conf = Config()
    for key in ("logger_class", "errorlog", "loglevel"):
        conf.set(key, settings[key])
    conf.logger_class(conf).warning("worker %s timed out", 7)
    data = json.loads(capsys.readouterr().err.strip())
    assert data["logger"] == "gunicorn.error" and data["msg"] == "worker 7 timed out"
    assert gunicorn_logger("text") is not gunicorn_logger("json")
