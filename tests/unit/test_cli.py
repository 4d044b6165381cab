"""The CLI's top-level error handling: an error that is not Tally's own is one line on stderr and a
non-zero exit; ``-v`` adds the traceback; an interrupt exits 130 without one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tally import cli

GENERATE = ["generate", "--events", "10", "--videos", "2", "--start", "2024-01-01",
            "--out", "/nonexistent/dir/x.jsonl"]


def environ(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env["TALLY_STATE_DIR"] = str(tmp_path / "state")
    return env


def tally(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # bytes, not text=True: universal newlines would turn the progress bar's \r into \n
    res = subprocess.run([sys.executable, "-m", "tally.cli", *args], env=environ(tmp_path),
                         capture_output=True, timeout=120, cwd=tmp_path)
    res.stderr = res.stderr.decode()
    return res


def shown(stderr: str) -> list[str]:
    """The lines a terminal shows: a progress bar redraws its line with carriage returns."""
    lines = [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]
    return [line for line in lines if line.strip()]


def test_an_unexpected_error_is_one_line(tmp_path):
    res = tally(tmp_path, *GENERATE)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert shown(res.stderr) == [
        "tally generate: error: FileNotFoundError: [Errno 2] No such file or directory: "
        "'/nonexistent/dir/x.jsonl' (-v for the traceback)"], res.stderr


def test_verbose_shows_the_traceback(tmp_path):
    res = tally(tmp_path, "-v", *GENERATE)
    assert res.returncode == 1
    assert "Traceback (most recent call last):" in res.stderr
    assert 'fh = open(out, "wb")' in res.stderr or "generator.py" in res.stderr
    assert shown(res.stderr)[-1].startswith("tally generate: error: FileNotFoundError: ")
    # after the command works too
    res = tally(tmp_path, *GENERATE, "--verbose")
    assert res.returncode == 1 and "Traceback (most recent call last):" in res.stderr


def test_an_error_with_an_empty_message_names_its_type(monkeypatch, capsys):
    def boom(args, cfg):
        raise RuntimeError()

    monkeypatch.setitem(cli.COMMANDS, "generate", boom)
    assert cli.main(["-q", *GENERATE]) == 1
    assert capsys.readouterr().err == "tally generate: error: RuntimeError (-v for the traceback)\n"


def test_a_multi_line_message_is_cut_to_its_first_line(monkeypatch, capsys):
    def boom(args, cfg):
        raise ValueError("first\nsecond\nthird")

    monkeypatch.setitem(cli.COMMANDS, "generate", boom)
    assert cli.main(["-q", *GENERATE]) == 1
    assert capsys.readouterr().err == "tally generate: error: ValueError: first (-v for the traceback)\n"


@pytest.mark.parametrize("where", ["command", "config"])
def test_keyboard_interrupt_exits_130_quietly(monkeypatch, capsys, where):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    if where == "command":
        monkeypatch.setitem(cli.COMMANDS, "generate", interrupted)
    else:
        monkeypatch.setattr(cli, "load_config", interrupted)
    assert cli.main(["-q", *GENERATE]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 1


def test_sigint_exits_130_without_a_traceback(tmp_path):
    """A real Ctrl-C while the command runs (slowed by --rate, so it is surely inside it once its
    output file has data)."""
    out = tmp_path / "slow.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tally.cli", "generate", "--events", "100000",
                             "--videos", "2", "--start", "2024-01-01", "--rate", "400",
                             "--out", str(out)],
                            env=environ(tmp_path), stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.stat().st_size, "the generator wrote nothing"
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(shown(err)) <= 1, err
