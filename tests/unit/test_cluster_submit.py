"""`tally cluster`: its config, the key of the packed environment, the requirements it packs and
the spark-submit line of a job (no cluster needed; tests/integration/test_cluster.py runs one)."""

from __future__ import annotations

import shlex
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from schemas.config import load_config
from schemas.errors import ConfigError, TallyError
from tally.devstack import cluster


def test_defaults_match_the_contract():
    c = load_config(environ={}).cluster
    assert c.master_url == "spark://127.0.0.1:7077"
    assert (c.worker_cores, c.worker_memory, c.app_cores) == (2, "2g", 1)


@pytest.mark.parametrize("env,message", [
    ({"TALLY_CLUSTER__WORKER_MEMORY": "2 GB"}, "cluster.worker_memory: must be a size"),
    ({"TALLY_CLUSTER__MASTER_PORT": "8090"}, "cluster: master_port, master_webui_port"),
    ({"TALLY_CLUSTER__MASTER_PORT": "70000"}, "cluster.master_port: must be below 65536"),
    ({"TALLY_CLUSTER__APP_CORES": "3"}, "cluster.app_cores: must not exceed"),
])
def test_bad_values_are_rejected_naming_the_key(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ=env)


def test_a_misspelt_key_is_rejected_in_a_file_and_warned_about_in_the_environment(tmp_path):
    (tmp_path / "c.toml").write_text("[cluster]\nmastr_port = 1\n")
    with pytest.raises(ConfigError, match="cluster.mastr_port: unknown config key"):
        load_config(tmp_path / "c.toml", environ={})
    # A variable that names no setting never breaks a command (tests/unit/test_config.py).
    assert load_config(environ={"TALLY_CLUSTER__MASTR_PORT": "1"}).cluster.master_port == 7077


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A small copy of a project tree for the packed environment's key."""
    root = tmp_path / "project"
    for name in cluster.BUILD_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name}\n")
    for pkg in cluster.PACKAGES:
        (root / pkg).mkdir()
        (root / pkg / "__init__.py").write_text(f'"""{pkg}"""\n')
    monkeypatch.setattr(cluster, "PROJECT_ROOT", root)
    return root


def test_env_key_follows_sources_and_build_files_only(project):
    key = cluster.env_key()
    assert cluster.env_key() == key
    (project / "tally" / "__pycache__").mkdir()
    (project / "tally" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert cluster.env_key() == key  # compiled files are not sources
    (project / "speed_layer" / "__init__.py").write_text('"""changed"""\n')
    changed = cluster.env_key()
    assert changed != key
    (project / "setup.cfg").write_text("[metadata]\nname = tally\n")
    assert cluster.env_key() != changed


def test_requirements_leave_out_what_the_cluster_provides(tmp_path):
    wheel = tmp_path / "tally-0.1.0-py3-none-any.whl"
    meta = "\n".join([
        "Metadata-Version: 2.1", "Name: tally", "Version: 0.1.0",
        "Requires-Dist: pyspark==4.2.0", "Requires-Dist: happybase==1.3.0",
        "Requires-Dist: moto[server]<6,>=5.1", "Requires-Dist: pyarrow<27,>=17",
        'Requires-Dist: pytest<10,>=8; extra == "test"', "", ""])
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tally-0.1.0.dist-info/METADATA", meta)
    assert cluster._requirements(wheel) == ["happybase==1.3.0", "pyarrow<27,>=17"]


@pytest.fixture
def cfg(tmp_path):
    lib = tmp_path / "lib" / "spark"
    lib.mkdir(parents=True)
    (lib / "spark-sql-kafka-0-10_2.13-4.2.0.jar").write_bytes(b"")
    return load_config(environ={}, overrides={
        "state_dir": str(tmp_path / "state"), "stack": {"lib_dir": str(tmp_path / "lib")},
        "cluster": {"master_port": 39077}})


def test_submit_command(cfg, tmp_path):
    archive = tmp_path / "tally-env-x.tar.gz"
    cmd = cluster.submit_command(cfg, "batch", ["--date", "2026-11-20"], archive)
    assert cmd[0].endswith("/bin/spark-submit")
    opt = {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1) if cmd[i].startswith("--")}
    assert opt["--master"] == "spark://127.0.0.1:39077" and opt["--deploy-mode"] == "client"
    assert opt["--archives"] == f"{archive}#environment"
    assert opt["--jars"].endswith("/spark-sql-kafka-0-10_2.13-4.2.0.jar")
    assert opt["--total-executor-cores"] == "1"
    confs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"]
    assert "spark.pyspark.python=./environment/bin/python" in confs
    assert f"spark.pyspark.driver.python={sys.executable}" in confs
    job = cmd.index(str(cluster.PROJECT_ROOT / "jobs" / "batch.py"))
    assert cmd[job + 1:] == ["--state-dir", str(cfg.state_path), "--date", "2026-11-20"]
    with pytest.raises(TallyError, match="job must be one of batch, stream"):
        cluster.submit_command(cfg, "nightly", [], archive)


def test_cli_passes_what_follows_the_double_dash_to_the_job(cfg, tmp_path, monkeypatch, capsys,
                                                             clean_env):
    from tally.cli import main
    from tally.devstack import stack

    monkeypatch.setattr(cluster, "pack_env", lambda cfg: Path("/envs/tally-env-x.tar.gz"))
    monkeypatch.setattr(stack, "ensure_jars", lambda cfg: None)
    monkeypatch.setenv("TALLY_STACK__LIB_DIR", cfg.stack.lib_dir)
    state = ["--state-dir", str(tmp_path / "state")]
    assert main(["cluster", "submit", *state, "--print", "stream", "--", "--until-idle", "5"]) == 0
    cmd = shlex.split(capsys.readouterr().out)
    assert cmd[-5:] == [str(cluster.PROJECT_ROOT / "jobs" / "stream.py"), "--state-dir",
                        str(tmp_path / "state"), "--until-idle", "5"]
    assert cmd[cmd.index("--archives") + 1] == "/envs/tally-env-x.tar.gz#environment"
    assert main(["cluster", "up", *state, "--", "x"]) == 1
    assert "takes no arguments after '--'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stack", "status", "--", "x"])
    assert "stack: unexpected arguments after '--': x" in capsys.readouterr().err


def test_session_under_spark_submit_keeps_what_it_was_given(cfg, monkeypatch):
    from pyspark.sql import SparkSession

    from adapters import spark as tally_spark

    given = {"spark.master": "spark://127.0.0.1:39077", "spark.app.name": "tally-batch",
             "spark.jars": "/elsewhere/x.jar", "spark.executor.extraJavaOptions": "-Dx=1"}
    monkeypatch.setattr(tally_spark, "submitted_conf", lambda: given)
    seen: dict[str, str] = {}

    class Builder:
        def config(self, key, value):
            seen[key] = value
            return self

        def getOrCreate(self):
            return SimpleNamespace(sparkContext=SimpleNamespace(setLogLevel=lambda level: None))

    monkeypatch.setattr(SparkSession, "builder", Builder())
    tally_spark.build_session(cfg, "tally-batch", master="submit")
    assert not set(given) & set(seen)  # nothing spark-submit was given is set again
    assert seen["spark.sql.session.timeZone"] == "UTC"  # the project's settings fill the rest
    seen.clear()
    tally_spark.build_session(cfg, "tally-archive")  # not under spark-submit: the config decides
    assert seen["spark.master"] == cfg.spark.master and seen["spark.app.name"] == "tally-archive"
    # On the driver's class path for a local master before any JVM runs, else spark.jars.
    jars = seen.get("spark.jars") or seen.get("spark.driver.extraClassPath", "")
    assert "spark-sql-kafka-0-10_2.13-4.2.0.jar" in jars
