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


def test_bench_and_docs_build_their_worlds_without_the_test_kits():
    """Benchmarks and documentation scripts use tally.devstack.worlds, never tests/."""
    offenders = [f"{path.relative_to(ROOT)}:{n}"
                 for path in [*ROOT.glob("bench/*.py"), *ROOT.glob("docs/**/*.py")]
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.match(r"\s*(from|import)\s+tests\b", line)]
    assert offenders == []
    assert any("tally.devstack.worlds" in p.read_text() for p in ROOT.glob("bench/*.py"))


def test_the_installed_production_closure_holds_no_tooling_library():
    """What `pip install .` pulls (the installed dependency tree without extras) holds no mock S3
    server, no plotting library and no test runner; the devstack extra brings them."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    def closure(name: str, extras: tuple[str, ...] = (), seen: set | None = None) -> set[str]:
        seen = set() if seen is None else seen
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            return seen
        seen.add(key)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            return seen
        for line in requires:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                continue
            closure(req.name, tuple(req.extras), seen)
        return seen

    base = closure("tally")
    assert {"pyspark", "flask", "pydantic-settings", "cachetools"} <= base, sorted(base)
    assert not base & {"moto", "matplotlib", "venv-pack", "pytest", "duckdb"}, sorted(base)
    assert {"moto", "matplotlib"} <= closure("tally", ("devstack",))
