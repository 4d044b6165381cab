"""infra/prometheus/alerts.yml: valid for Prometheus (`promtool check rules`), its unit tests pass
(`promtool test rules`), every alert has a case where it fires and one where it does not, and
docs/operations.md lists every alert. That the metrics the rules name exist is checked against
the real /metrics outputs by tests/integration/test_observability.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "alerts.yml"
CASES = ROOT / "infra" / "prometheus" / "alerts.test.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: make setup installs Debian's prometheus package"
    return path


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules():
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in res.stdout


def test_promtool_runs_the_rules_unit_tests():
    res = subprocess.run([promtool(), "test", "rules", str(CASES)], capture_output=True,
                         text=True, timeout=120, cwd=CASES.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    firing, quiet = set(), set()
    for case in yaml.safe_load(CASES.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert len(names) == len(alerts()), "an alert name is used twice"
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a case where they stay quiet"
    assert (firing | quiet) - names == set(), "cases of alerts that do not exist"


def test_the_operations_guide_lists_every_alert():
    doc = (ROOT / "docs" / "operations.md").read_text()
    missing = [a["alert"] for a in alerts() if f"`{a['alert']}`" not in doc]
    assert missing == []
