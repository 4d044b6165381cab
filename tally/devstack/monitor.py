"""A local Prometheus and Pushgateway (Debian's ``prometheus`` and ``prometheus-pushgateway``)
on 127.0.0.1, for the tests and for trying the alert rules and the dashboard's queries against a
running installation.

Prometheus scrapes the given API and streaming-job targets as jobs ``tally-api`` and
``tally-stream`` and the Pushgateway as ``pushgateway`` (with ``honor_labels``, so a batch run
keeps ``job="tally-batch"``), evaluates infra/prometheus/alerts.yml, and keeps its data in
``<dir>/data``; the same layout as infra/prometheus/prometheus.yml, with the targets filled in.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.paths import PROJECT_ROOT
from schemas.errors import StackError

PROMETHEUS = "/usr/bin/prometheus"
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
HOST = "127.0.0.1"


def rules_file() -> Path:
    return PROJECT_ROOT / "infra" / "prometheus" / "alerts.yml"


def prometheus_config(api: list[str], stream: list[str], pushgateway: str | None,
                      interval_s: float, rules: Path) -> dict[str, Any]:
    jobs = [("tally-api", api, False), ("tally-stream", stream, False)]
    if pushgateway:
        jobs.append(("pushgateway", [pushgateway], True))
    interval = f"{int(interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": name, "honor_labels": honor,
                            "static_configs": [{"targets": targets}]}
                           for name, targets, honor in jobs if targets],
    }


@dataclass
class Monitor:
    """A Prometheus (and, with ``pushgateway_port``, a Pushgateway) of one directory."""

    dir: Path
    prometheus_port: int
    api: list[str] = field(default_factory=list)  # host:port of each `tally serve`
    stream: list[str] = field(default_factory=list)  # host:port of each stream's /metrics
    pushgateway_port: int | None = None
    interval_s: float = 1.0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.prometheus_port}"

    @property
    def pushgateway_url(self) -> str:
        return f"http://{HOST}:{self.pushgateway_port}"

    def start(self, timeout_s: float = 60) -> "Monitor":
        for binary in (PROMETHEUS, PUSHGATEWAY if self.pushgateway_port else PROMETHEUS):
            if not shutil.which(binary):
                raise StackError(f"{binary} is missing: `make setup` installs Debian's "
                                 "prometheus and prometheus-pushgateway packages")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.pushgateway_port:
            # Debian's build persists to /var/lib/prometheus by default: this one keeps its own.
            self._spawn("pushgateway", [PUSHGATEWAY, f"--web.listen-address={HOST}:"
                                                     f"{self.pushgateway_port}",
                                        f"--persistence.file={self.dir / 'pushgateway.data'}"])
        config = prometheus_config(self.api, self.stream,
                                   f"{HOST}:{self.pushgateway_port}" if self.pushgateway_port
                                   else None, self.interval_s, rules_file())
        path = self.dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self._spawn("prometheus", [PROMETHEUS, f"--config.file={path}",
                                   f"--storage.tsdb.path={self.dir / 'data'}",
                                   f"--web.listen-address={HOST}:{self.prometheus_port}",
                                   "--web.enable-lifecycle"])
        deadline = time.monotonic() + timeout_s
        ready = [f"{self.url}/-/ready"] + ([f"{self.pushgateway_url}/-/ready"]
                                           if self.pushgateway_port else [])
        for url in ready:
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    self.stop()
                    raise StackError(f"{', '.join(dead) or url} did not start; see "
                                     f"{self.dir}/*.log")
                time.sleep(0.2)
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            cwd=self.dir)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def api_get(self, path: str, **params: str) -> Any:
        """A GET of Prometheus's HTTP API (``/api/v1/...``); its ``data``."""
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise StackError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the result's series (``metric`` labels and ``value``)."""
        data = self.api_get("/api/v1/query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [
            {"metric": {}, "value": data["result"]}]
