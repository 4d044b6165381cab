"""The monitoring surface against a real Prometheus (Debian's package) and Pushgateway on
127.0.0.1: Prometheus scrapes a running `tally serve` (two gunicorn workers) and a running
`tally stream` (its driver's /metrics), and the Pushgateway receives the batch commands' pushes
(`tally rollback`, and `tally batch --date` refusing an open day).

Checked: every panel query of infra/grafana/tally.json returns at least one series through
Prometheus's HTTP API, each series carrying only labels of the `tally_` metric it reads (no
`or vector(0)`); Prometheus loaded infra/prometheus/alerts.yml and evaluates every rule without
error; every metric an alert or docs/operations.md names is in the real /metrics outputs; those
outputs pass `promtool check metrics`; the JSON result lines of the batch commands.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tally.devstack.monitor import Monitor
from tally.devstack.worlds import day_ms, publish_minutes
from tests.integration.servekit import free_port_block
from tests.integration.speedkit import make_installation

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "tally.json"
RULES = ROOT / "infra" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\b(tally_[a-z0-9_]+|up)\b")
# What a histogram or a summary exposes under its name.
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def panel_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row"
            for t in p["targets"]]


def get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            get(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def metric_names(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def named(names: set[str], metric: str) -> bool:
    return metric in names or any(metric == n + s or n == metric + s
                                  for n in names for s in SUFFIXES)


@pytest.fixture(scope="module")
def observed(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("observability")
    api_port, stream_port, prom_port, pg_port = (free_port_block(4) + i for i in range(4))
    inst = make_installation(stack, root, f"obs{int(time.time() * 1000) % 10**8}",
                             TALLY_METRICS__STREAM_PORT=str(stream_port),
                             TALLY_METRICS__PUSHGATEWAY=f"http://127.0.0.1:{pg_port}",
                             TALLY_METRICS__INSTANCE="test-host",
                             TALLY_SERVE__WORKERS="2", TALLY_SERVE__CATALOG_TTL_S="0")
    monitor = Monitor(root / "prometheus", prom_port, api=[f"127.0.0.1:{api_port}"],
                      stream=[f"127.0.0.1:{stream_port}"], pushgateway_port=pg_port).start()
    procs = []
    try:
        # A closed day, published twice (the horizon exists; rollback has a version to go to).
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 3 * 86400))
        rows = [("vid-1", "view", day_ms(day) + 60_000 * i, 2, 100) for i in range(30)]
        publish_minutes(inst.cfg, day, rows)
        publish_minutes(inst.cfg, day, rows[:20])
        stream = inst.start_stream("--trigger", "1s", "--archive-trigger", "2s")
        procs.append(stream)
        serve_log = root / "serve.log"
        serve = subprocess.Popen([sys.executable, "-m", "tally.cli", "serve", "--port",
                                  str(api_port)], env=inst.env, stdout=open(serve_log, "wb"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(serve)
        # The batch commands while the JVM of the stream starts.
        rollback = inst.tally("rollback", "--date", day, "--json")
        today = time.strftime("%Y-%m-%d", time.gmtime())
        refused = inst.tally("batch", "--date", today, "--json", check=False)
        wait_http(f"http://127.0.0.1:{api_port}/healthz", serve, serve_log)
        api = f"http://127.0.0.1:{api_port}"
        now = time.time()
        events = [{"event_id": f"obs-{i}", "video_id": f"vid-{i % 3}", "event_type": "view",
                   "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - i)),
                   "watch_ms": 1000} for i in range(40)]
        req = urllib.request.Request(f"{api}/v1/events", data=json.dumps(events).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 202
        try:  # one 400, so the error panels have a series
            get(f"{api}/v1/videos/vid-1/counts?from=nonsense&to=x")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
        get(f"{api}/v1/videos/vid-1/counts?from={day}T00:00:00Z&to={day}T06:00:00Z")
        wait_http(f"http://127.0.0.1:{stream_port}/metrics", stream, root / "stream.log")
        yield {"inst": inst, "monitor": monitor, "api": api, "day": day, "rollback": rollback,
               "refused": refused, "stream_metrics": f"http://127.0.0.1:{stream_port}/metrics",
               "pushgateway": f"http://127.0.0.1:{pg_port}/metrics", "stream": stream}
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        monitor.stop()


def test_batch_commands_print_a_json_line_and_push(observed):
    (line,) = observed["rollback"].stdout.splitlines()
    result = json.loads(line)
    assert result["command"] == "rollback" and result["day"] == observed["day"]
    assert result["pinned"] is True
    refused = observed["refused"]
    assert refused.returncode == 1
    report = json.loads(refused.stdout)
    assert report["command"] == "batch" and report["refused"] == [time.strftime("%Y-%m-%d",
                                                                              time.gmtime())]
    pushed = observed["monitor"]
    deadline = time.monotonic() + 60
    while True:
        got = {(s["metric"]["command"], s["metric"]["outcome"])
               for s in pushed.query('tally_batch_run_outcome == 1')}
        if got >= {("rollback", "ok"), ("batch", "refused")} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == {("rollback", "ok"), ("batch", "refused")}
    versions = pushed.query("tally_batch_published_version_info")
    assert len(versions) == 1, [v["metric"] for v in versions]
    (version,) = versions
    assert version["metric"]["day"] == observed["day"]
    assert version["metric"]["version"] == result["version"]
    assert version["metric"]["job"] == "tally-batch"  # honor_labels kept the pushed job
    assert version["metric"]["instance"] == "test-host"


def test_every_dashboard_panel_returns_series_of_its_metric(observed):
    monitor = observed["monitor"]
    queries = panel_queries()
    assert len(queries) >= 20
    missing: dict[str, str] = {}
    deadline = time.monotonic() + 240
    while True:
        missing = {}
        results = {}
        for title, expr in queries:
            assert "vector(" not in expr, (title, expr)
            res = monitor.query(expr.replace("$__rate_interval", "1m"))
            results[expr] = res
            if not res:
                missing[title] = expr
        if not missing or time.monotonic() > deadline or observed["stream"].poll() is not None:
            break
        time.sleep(2)
    assert missing == {}, missing
    # The stream's watermark trails its events (sent just now) by about stream.watermark.
    (delay,) = results["tally_stream_watermark_delay_seconds"]
    assert 0 < float(delay["value"][1]) < 3600, delay
    for title, expr in queries:  # shown with -s: what each panel would draw now
        print(f"{title} | {expr} | " + "; ".join(
            f"{ {k: v for k, v in s['metric'].items() if k not in ('job', 'instance')} }="
            f"{float(s['value'][1]):.4g}" for s in results[expr][:4]))
    for title, expr in queries:
        metrics = [m for m in METRIC.findall(expr) if m != "up"]
        assert metrics and all(m.startswith("tally_") for m in metrics), (title, expr)
        labels: set[str] = set()
        for m in metrics:
            series = monitor.query(f'{{__name__=~"{m}(_bucket)?"}}')
            assert series, (title, m)
            labels |= {k for s in series for k in s["metric"] if k != "__name__"}
        for s in results[expr]:
            got = set(s["metric"]) - {"__name__"}
            assert got, (title, expr, s)  # a series of the metric, not a bare number
            assert got <= labels, (title, expr, got - labels)


def test_prometheus_evaluates_every_alert_rule(observed):
    monitor = observed["monitor"]
    names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    deadline = time.monotonic() + 60
    while True:
        rules = [r for g in monitor.api_get("/api/v1/rules")["groups"] for r in g["rules"]]
        evaluated = [r for r in rules if r.get("lastEvaluation", "").startswith("2")
                     and not r["lastEvaluation"].startswith("0001")]
        if len(evaluated) == len(rules) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {r["name"] for r in rules} == names
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_every_metric_named_exists_in_the_real_outputs(observed):
    outputs = {"api": get(f"{observed['api']}/metrics"),
               "stream": get(observed["stream_metrics"]),
               "pushgateway": get(observed["pushgateway"])}
    names = set().union(*(metric_names(o) for o in outputs.values())) | {"up"}
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    in_rules = {m for e in exprs for m in METRIC.findall(e)}
    assert len(in_rules) >= 15
    assert {m for m in in_rules if not named(names, m)} == set()
    doc = (ROOT / "docs" / "operations.md").read_text()
    in_docs = set(re.findall(r"\btally_[a-z0-9_]+\b(?!\.py)", doc))
    assert len(in_docs) >= 25
    assert {m for m in in_docs if not named(names, m)} == set()
    # What the docs' metrics table lists is every tally_ metric the outputs have.
    ours = {n for n in names if n.startswith("tally_") and not n.endswith(SUFFIXES)}
    assert {n for n in ours if not any(n == d or n.startswith(d + "_") for d in in_docs)} == set()
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: make setup installs Debian's prometheus package"
    for name in ("api", "stream"):
        res = subprocess.run([promtool, "check", "metrics"], input=outputs[name].encode(),
                             capture_output=True, timeout=30)
        assert res.returncode == 0, (name, res.stderr.decode())
    assert 'component="stream"' in outputs["stream"] and 'component="api"' in outputs["api"]
