"""The layer rules hold: import-linter's contracts in .importlinter (floors, production never
importing the command or the local tooling, the contract importing nothing of the project, no
cycles between sibling modules), and the tooling's libraries are extras, not dependencies."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter"), "--no-cache"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", out)
    assert kept and int(kept.group(1)) >= 4 and kept.group(2) == "0", out[-2000:]


def test_a_production_install_pulls_no_tooling_library():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    names = {re.split(r"[<>=\[ ;]", line.strip(), maxsplit=1)[0].lower()
             for line in cfg["options"]["install_requires"].splitlines()
             if line.strip() and not line.strip().startswith("#")}
    assert "pyspark" in names and "flask" in names
    assert not names & {"moto", "matplotlib", "venv-pack", "pytest", "duckdb"}, names
    devstack = cfg["options.extras_require"]["devstack"]
    assert "moto[server]" in devstack and "matplotlib" in devstack
