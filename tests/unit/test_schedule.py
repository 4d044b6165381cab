"""infra/schedule/tally-batch.cron runs as written: its job line, taken from the file, run by bash
in an environment like cron's (PATH=/usr/bin:/bin, HOME, the TALLY_* variables the file's comment
asks for), with the real `tally` of this checkout's virtualenv on an empty installation.

No stack is needed: the config points Kafka and HBase at closed ports and the lake at an empty
local directory. The nightly run then starts its Spark session, finds the archive's closure
unknown (Kafka cannot be read within kafka.request_timeout_ms), reports that on its
JSON line and exits 0, as the cron file documents; the line goes on to the audit of yesterday,
which exits 1 because an empty installation has no published batch view for it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRON = ROOT / "infra" / "schedule" / "tally-batch.cron"
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def cron_file(path: Path = CRON) -> tuple[dict[str, str], list[str]]:
    """The environment assignments and the commands of a crontab (the five time fields cut off,
    cron's ``\\%`` turned back into ``%``)."""
    env: dict[str, str] = {}
    commands = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if ASSIGNMENT.match(line):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip().strip('"')
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a cron job line: {raw!r}"
        command = fields[5]
        # cron turns an unescaped % into a newline (the rest is the job's stdin).
        assert not re.search(r"(?<!\\)%", command), f"unescaped % in {command!r}"
        commands.append(command.replace("\\%", "%"))
    return env, commands


def test_the_cron_file_has_one_job_line():
    env, commands = cron_file()
    assert env == {"CRON_TZ": "UTC"}
    assert len(commands) == 1
    assert ".venv/bin/tally batch --json" in commands[0]
    assert commands[0].startswith('cd "$TALLY_HOME" && ')


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_cron_job_line_runs_as_written(tmp_path):
    venv = Path(sys.prefix)
    # The cron line runs the virtualenv's `tally`: make setup installs the checkout there.
    assert (venv / "bin" / "tally").exists(), \
        f"no `tally` in {venv}/bin (install the checkout: pip install -e .)"
    home = tmp_path / "home"  # TALLY_HOME: a checkout whose .venv is this one
    home.mkdir()
    (home / ".venv").symlink_to(venv)
    state = tmp_path / "state"
    state.mkdir(parents=True)  # a fresh state directory: the job line makes logs/ itself
    lake = tmp_path / "lake"
    lake.mkdir()
    config = tmp_path / "tally.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "127.0.0.1:{_closed_port()}"\nrequest_timeout_ms = 2000\n'
        f'[hbase]\nport = {_closed_port()}\ntimeout_ms = 2000\n'
        f'[lake]\nuri = "{lake.as_uri()}"\ns3_endpoint = ""\n'
        '[spark]\nmaster = "local[1]"\ndriver_memory = "512m"\n')
    cron_env, (command,) = cron_file()
    env = {**cron_env, "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "HOME": str(tmp_path),
           "LOGNAME": os.environ.get("LOGNAME", "tally"), "TALLY_HOME": str(home),
           "TALLY_STATE_DIR": str(state), "TALLY_CONFIG": str(config)}

    res = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=280)

    log_file = state / "logs" / "batch-cron.log"
    assert log_file.exists(), (res.returncode, res.stdout, res.stderr)
    log = log_file.read_text()
    assert "unknown config key" not in log, log
    assert "names no setting" not in log, log  # TALLY_HOME and TALLY_CONFIG are Tally's own
    results = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(results) == 1, log
    (report,) = results
    assert report["command"] == "nightly" and report["refused"] == [] and report["days"] == []
    assert report["closed"] is False and report["reason"].startswith("kafka: "), report
    # `tally batch` exited 0 (the line's `&&` went on to the audit), and the audit, with no
    # published view of yesterday on an empty installation, is the line's exit status.
    assert re.search(r"tally audit: error: --date \d{4}-\d{2}-\d{2}: no published batch view",
                     log), log
    assert res.returncode == 1, (res.returncode, log)
    assert len(list((state / "logs").glob("audit-*.json"))) == 1
    assert res.stdout == "" and res.stderr == ""  # everything went to the log, as cron's mail
