"""A local Spark standalone cluster, and the jobs submitted to it the way a production cluster
runs them.

``tally cluster up`` starts a master and one worker on 127.0.0.1 from pyspark's own distribution
(``bin/spark-class``; the pip package ships no ``start-master.sh``), managed like the rest of the
stack: pid files under ``<state>/run``, logs under ``<state>/logs``, health by a request to the
master's JSON page, a clean stop by pid. Executors run in ``<state>/cluster/work/<app>/<n>/``.

``tally cluster submit batch|stream`` runs ``jobs/batch.py`` or ``jobs/stream.py`` through
``spark-submit`` in client mode: the driver runs here in the dev environment; the executors run
in a packed virtualenv shipped with ``--archives tally-env.tar.gz#environment`` (the project
installed from a wheel, not editable, and its dependencies; see :func:`pack_env`), and get the
connector jars through ``--jars``. Nothing of this machine's Python reaches the executors: the
worker starts with no ``PYTHONPATH``, so a job whose environment was not shipped fails.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

from adapters import log
from adapters.paths import PROJECT_ROOT
from schemas.config import TallyConfig
from schemas.errors import StackError, TallyError
from tally.devstack.stack import LOG4J2_TEMPLATE, Part, Stack

JOBS = ("batch", "stream")
# What the wheel is built from; setup.cfg also reads README.md (its long description), which
# changes nothing the executors run and so is not part of the packed environment's key.
PACKAGES = ("tally", "schemas", "adapters", "speed_layer", "batch_layer", "serving_layer", "jobs")
BUILD_FILES = ("setup.cfg", "pyproject.toml")
# Requirements the packed environment leaves out. pyspark: the cluster's own Spark puts its
# pyspark.zip on the executors' PYTHONPATH (480 MB more would only shadow it, and must match the
# cluster's version anyway). moto: the local S3 endpoint, a development server.
NOT_PACKED = frozenset({"pyspark", "moto"})
# Environment a daemon must not pass on to the executors it launches.
DAEMON_ENV_DROP = ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV",
                   "SPARK_CONF_DIR", "SPARK_LOCAL_DIRS")


def spark_home() -> Path:
    """pyspark's own distribution: bin/spark-class, bin/spark-submit, jars/, python/lib/."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


class Cluster(Stack):
    """The master and the worker of one state directory (the stack's process management)."""

    stop_order = ("spark-worker", "spark-master")

    def _parts(self) -> list[Part]:
        c = self.cfg.cluster
        return [
            Part("spark-master", [c.master_port, c.master_webui_port], self._master_cmd,
                 self._master_health, self._prepare, env=self._env("spark-master"),
                 endpoint=f"{c.master_url} (web UI {self.webui})",
                 owns=lambda cmd: self._properties("spark-master") in cmd),
            Part("spark-worker", [c.worker_port, c.worker_webui_port], self._worker_cmd,
                 self._worker_health, self._prepare, env=self._env("spark-worker"),
                 endpoint=f"{c.host}:{c.worker_port} ({c.worker_cores} cores, {c.worker_memory})",
                 owns=lambda cmd: self._properties("spark-worker") in cmd),
        ]

    @property
    def webui(self) -> str:
        return f"http://{self.cfg.cluster.host}:{self.cfg.cluster.master_webui_port}"

    @property
    def work_dir(self) -> Path:
        return self.state / "cluster" / "work"

    @property
    def local_dir(self) -> Path:
        return self.state / "cluster" / "local"

    @property
    def conf_dir(self) -> Path:
        return self.state / "cluster" / "conf"

    def _properties(self, part: str) -> str:
        # Each daemon is started with --properties-file <state>/cluster/conf/<part>.conf: that
        # path is on its command line from the first instant (spark-class is a shell script that
        # execs the JVM), so it identifies the process (Part.owns).
        return str(self.conf_dir / f"{part}.conf")

    def _env(self, part: str) -> dict[str, str | None]:
        c = self.cfg.cluster
        env: dict[str, str | None] = {k: None for k in DAEMON_ENV_DROP}
        env.update({
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(self.conf_dir),
            "SPARK_LOCAL_IP": c.host,
            # The executors' scratch (shuffle blocks, the fetched jars' cache) under the state
            # directory: what a killed executor leaves goes with it, not into /tmp.
            "SPARK_LOCAL_DIRS": str(self.local_dir),
            "SPARK_DAEMON_MEMORY": f"{c.daemon_heap_mb}m",
            "SPARK_DAEMON_JAVA_OPTS":
                f"-Dlog4j2.configurationFile={(self.conf_dir / f'log4j2-{part}.properties').as_uri()}",
        })
        return env

    def _prepare(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        props = {
            # Jobs are submitted by spark-submit in client mode; no REST submission server
            # (it would take the fixed port 6066).
            "spark-master": {"spark.master.rest.enabled": "false"},
            # Applications' directories (each holds its unpacked environment) go after a day.
            "spark-worker": {"spark.worker.cleanup.enabled": "true",
                             "spark.worker.cleanup.appDataTtl": "86400"},
        }
        for part, conf in props.items():
            (self.conf_dir / f"log4j2-{part}.properties").write_text(
                LOG4J2_TEMPLATE.format(log=self.log_path(part), level="INFO"))
            Path(self._properties(part)).write_text("".join(f"{k}={v}\n" for k, v in conf.items()))

    def _daemon(self, part: str, main_class: str) -> list[str]:
        return [str(spark_home() / "bin" / "spark-class"), main_class,
                "--properties-file", self._properties(part), "--host", self.cfg.cluster.host]

    def _master_cmd(self) -> list[str]:
        c = self.cfg.cluster
        return self._daemon("spark-master", "org.apache.spark.deploy.master.Master") + [
            "--port", str(c.master_port), "--webui-port", str(c.master_webui_port)]

    def _worker_cmd(self) -> list[str]:
        c = self.cfg.cluster
        return self._daemon("spark-worker", "org.apache.spark.deploy.worker.Worker") + [
            "--port", str(c.worker_port), "--webui-port", str(c.worker_webui_port),
            "--cores", str(c.worker_cores), "--memory", c.worker_memory,
            "--work-dir", str(self.work_dir), c.master_url]

    def master_json(self, timeout: float = 5) -> dict:
        """The master's own summary: workers, running and completed applications."""
        with urllib.request.urlopen(f"{self.webui}/json/", timeout=timeout) as resp:
            return json.load(resp)

    def _master_health(self) -> str:
        state = self.master_json()
        if state.get("status") != "ALIVE":
            raise StackError(f"master status {state.get('status')!r}")
        return (f"ALIVE, {state.get('aliveworkers', 0)} worker(s), "
                f"{len(state.get('activeapps', []))} running application(s)")

    def _worker_health(self) -> str:
        c = self.cfg.cluster
        for w in self.master_json().get("workers", []):
            if w.get("port") == c.worker_port and w.get("state") == "ALIVE":
                return f"registered, {w['coresused']}/{w['cores']} cores in use"
        raise StackError("not registered with the master (yet)")


# The packed environment ------------------------------------------------------------------------

def env_dir(cfg: TallyConfig) -> Path:
    return Path(cfg.cluster.env_dir).expanduser().resolve() if cfg.cluster.env_dir \
        else cfg.state_path / "cluster" / "env"


def _pinned() -> list[str]:
    """``name==version`` of every distribution of this (the driver's) environment but Tally, so
    the executors run the same library versions as the driver."""
    seen = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name != "tally":
            seen[name] = f"{name}=={dist.version}"
    return sorted(seen.values())


def _source_files() -> list[Path]:
    files = [PROJECT_ROOT / f for f in BUILD_FILES]
    for pkg in PACKAGES:
        files += sorted(p for p in (PROJECT_ROOT / pkg).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return files


def env_key() -> str:
    """A hash of what the packed environment is made of: setup.cfg and pyproject.toml, the
    packages' files, this Python's version and the pinned dependency versions."""
    h = hashlib.sha256()
    for path in _source_files():
        h.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(sys.version.encode())
    h.update("\n".join(_pinned()).encode())
    return h.hexdigest()[:16]


def pack_env(cfg: TallyConfig, force: bool = False) -> Path:
    """The packed environment for the executors, built when the sources or the dependencies
    changed since the last one (cached as ``<env dir>/tally-env-<hash>.tar.gz``)."""
    out_dir = env_dir(cfg)
    target = out_dir / f"tally-env-{env_key()}.tar.gz"
    if target.exists() and not force:
        log.progress(f"cluster pack: up to date, {target}")
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
        work = Path(tmp)
        wheel = _build_wheel(work)
        log.progress(f"cluster pack: built {wheel.name}; installing it into a fresh virtualenv ...")
        venv = work / "venv"
        # This environment's pip installs into the new one (no pip of its own to set up), and
        # compiles nothing: executors compile what they import (a third of the time otherwise).
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the virtualenv")
        constraints = work / "constraints.txt"
        constraints.write_text("\n".join(_pinned()) + "\n")
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
               "-q", "--no-input", "--no-compile", "--disable-pip-version-check"]
        _run([*pip, "--no-deps", str(wheel)], "installing the wheel")
        _run([*pip, "-c", str(constraints), *_requirements(wheel)], "installing its dependencies")
        log.progress("cluster pack: packing the virtualenv with venv-pack ...")
        import venv_pack

        partial = work / "env.tar.gz"
        venv_pack.pack(prefix=str(venv), output=str(partial), format="tar.gz", compress_level=1)
        os.replace(partial, target)  # atomic: a concurrent reader sees the whole archive or none
    for old in out_dir.glob("tally-env-*.tar.gz"):
        if old != target:
            old.unlink(missing_ok=True)
    log.progress(f"cluster pack: {target} ({target.stat().st_size / 2**20:.0f} MB) "
                 f"in {time.monotonic() - t0:.0f}s")
    return target


def _build_wheel(work: Path) -> Path:
    """A wheel of the project, built from a copy of its sources (the checkout stays clean)."""
    src = work / "src"
    src.mkdir()
    for name in (*BUILD_FILES, "README.md"):
        shutil.copy2(PROJECT_ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(PROJECT_ROOT / pkg, src / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-w", str(work / "dist"), str(src)], "building the wheel")
    return next((work / "dist").glob("tally-*.whl"))


def _requirements(wheel: Path) -> list[str]:
    """The wheel's own requirements (Requires-Dist, without extras), less :data:`NOT_PACKED`."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    out = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if req.name.lower() not in NOT_PACKED:
            out.append(str(req))
    return out


def _run(cmd: list[str], what: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise TallyError(f"cluster pack: {what} failed:\n{tail}")


# Submitting ------------------------------------------------------------------------------------

def submit_command(cfg: TallyConfig, job: str, job_args: list[str], archive: Path,
                   config_file: str | None = None) -> list[str]:
    """The spark-submit line of a job on the cluster (client mode: the driver runs here)."""
    from adapters.spark import connector_jars, java_options

    if job not in JOBS:
        raise TallyError(f"cluster submit: job must be one of {', '.join(JOBS)}, got {job!r}")
    c = cfg.cluster
    cmd = [str(spark_home() / "bin" / "spark-submit"),
           "--master", c.master_url, "--deploy-mode", "client", "--name", f"tally-{job}",
           "--driver-memory", cfg.spark.driver_memory, "--executor-memory", c.executor_memory,
           "--executor-cores", str(c.app_cores), "--total-executor-cores", str(c.app_cores),
           "--jars", ",".join(connector_jars(cfg)),
           "--archives", f"{archive}#environment",
           "--conf", "spark.pyspark.python=./environment/bin/python",
           "--conf", f"spark.pyspark.driver.python={sys.executable}",
           "--conf", f"spark.driver.extraJavaOptions={java_options(cfg)}",
           "--conf", f"spark.executor.extraJavaOptions={java_options(cfg, log_to_file=False)}",
           str(PROJECT_ROOT / "jobs" / f"{job}.py"), "--state-dir", str(cfg.state_path)]
    if config_file:
        cmd += ["--config", str(Path(config_file).resolve())]
    return cmd + list(job_args)


def submit(cfg: TallyConfig, job: str, job_args: list[str], config_file: str | None = None,
           print_only: bool = False) -> int:
    """Run ``job`` on the cluster through spark-submit; its exit code."""
    from tally.devstack.stack import ensure_jars

    ensure_jars(cfg)
    archive = pack_env(cfg)
    cmd = submit_command(cfg, job, job_args, archive, config_file)
    if print_only:
        print(" ".join(_quote(a) for a in cmd))
        return 0
    cluster = Cluster(cfg)
    try:
        cluster._master_health()
    except Exception as exc:  # noqa: BLE001 - any failure means the master is not there
        raise StackError(f"no Spark master at {cfg.cluster.master_url} (web UI {cluster.webui}: "
                         f"{exc}); start it with `tally cluster up`") from None
    log.progress(f"cluster submit: {job} on {cfg.cluster.master_url}")
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": cfg.cluster.host}
    env.pop("SPARK_CONF_DIR", None)
    return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
