"""The local stack: Kafka (KRaft), HBase standalone + Thrift, and a moto S3 endpoint.

Each part runs as a background process bound to 127.0.0.1, with its pid file, log file and data
under the state directory:

    <state>/run/<part>.pid      <state>/logs/<part>.log (+ .out for the JVM's own stdout)
    <state>/kafka/              <state>/hbase/          <state>/lake/

``up`` is idempotent: it starts what is not running (refusing clearly when a port it needs is
held by someone else), waits until every part answers a real request, then creates what is
missing (topics, HBase tables pre-split at their salt values, the lake and the S3 bucket).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from adapters import log
from adapters.paths import PROJECT_ROOT, java_bin, lib_dir
from schemas.config import TallyConfig
from schemas.errors import PortInUseError, StackError

LOG = log.get("stack")

PARTS = ("kafka", "hbase", "hbase-thrift", "s3")

# HBase's own launcher (bin/hbase) adds these on JDK 11+.
HBASE_JDK17_OPTS = [
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
    "--add-modules", "jdk.unsupported",
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "--add-opens", "java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-exports", "java.base/sun.net.dns=ALL-UNNAMED",
    "--add-exports", "java.base/sun.net.util=ALL-UNNAMED",
]

LOG4J2_TEMPLATE = """\
status = error
name = tally
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{ISO8601}} %-5p [%t] %c{{2}}: %m%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


def ensure_jars(cfg: TallyConfig) -> None:
    """Resolve the Java parts from Maven Central when any is missing (a no-op otherwise)."""
    lib = lib_dir(cfg)
    wanted = {"kafka": "kafka_2.13-", "hbase": "hbase-server-", "spark": "spark-sql-kafka-",
              "udf": "tally-udf"}
    if all(any(p.name.startswith(prefix) for p in (lib / part).glob("*.jar"))
           for part, prefix in wanted.items()):
        return
    pom = PROJECT_ROOT / "infra" / "pom.xml"
    if not pom.exists() or not shutil.which("mvn"):
        raise StackError(f"jars missing under {lib} and no Maven to fetch them (mvn -f {pom} package)")
    log.progress(f"fetching Java parts with Maven into {lib} ...")
    res = subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "package"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise StackError(f"maven could not resolve the Java parts:\n{tail}")


def classpath(*dirs: Path) -> str:
    return ":".join(str(d / "*") if d.is_dir() and d.name != "conf" else str(d) for d in dirs)


# Ports ----------------------------------------------------------------------------------------

def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return not port_open(host, port, timeout=0.2)


def holder_of(port: int) -> str:
    """Best effort: 'pid N (cmd)' of the process listening on ``port``."""
    try:
        inode = None
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                        inode = parts[9]
                        break
            if inode:
                break
        if not inode:
            return "another process"
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                        return f"pid {pid} ({os.path.basename(cmd)})"
            except OSError:
                continue
    except OSError:
        pass
    return "another process"


# Parts ----------------------------------------------------------------------------------------

@dataclass
class Part:
    """One process of the stack."""

    name: str
    ports: list[int]
    command: Callable[[], list[str]]
    health: Callable[[], str]  # returns a detail string or raises
    prepare: Callable[[], None] = lambda: None
    env: dict[str, str | None] = field(default_factory=dict)  # None: unset it for the part
    endpoint: str = ""
    # Whether a process command line (NUL-separated) is this part of this state directory;
    # default: the JVM marker -Dtally.part=<name>@<state>.
    owns: Callable[[str], bool] | None = None


def serve_s3(argv: list[str]) -> None:
    """``python -m moto.server ARGV``, refusing (403) what a browser sends on a web page's
    behalf: a request with an ``Origin`` header or a ``Sec-Fetch-Site`` other than ``none``, or
    for a ``Host`` that is not the endpoint's (DNS rebinding). CORS off alone still lets a page
    send simple requests blind: a form POST uploads an object, a ``text/plain`` POST
    ``?delete`` deletes them, ``POST /moto-api/reset`` wipes everything. The lake's clients
    (boto3, pyarrow, s3a) send neither header."""
    import argparse

    from moto import server

    host_arg = argparse.ArgumentParser(add_help=False)
    host_arg.add_argument("-H", "--host", default="127.0.0.1")
    hosts = {host_arg.parse_known_args(argv)[0].host, "127.0.0.1", "localhost", "::1"}

    class Guarded(server.DomainDispatcherApplication):
        def __call__(self, environ, start_response):
            host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0].strip("[]").lower()
            if ("HTTP_ORIGIN" in environ or environ.get("HTTP_SEC_FETCH_SITE", "none") != "none"
                    or host not in hosts):
                start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [b"refused: a request from a web page or for another host\n"]
            return super().__call__(environ, start_response)

    server.DomainDispatcherApplication = Guarded
    server.main(argv)


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka's own ``Uuid.randomUuid`` makes them: URL-safe base64 of 16
    random bytes, never starting with "-" (the storage tool would read it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Stack:
    """The local stack of one state directory."""

    stop_order = ("hbase-thrift", "hbase", "kafka", "s3")

    def __init__(self, cfg: TallyConfig):
        self.cfg = cfg
        self.state = cfg.state_path
        self.run_dir = self.state / "run"
        self.log_dir = self.state / "logs"
        self.lib = lib_dir(cfg)
        self.parts = {p.name: p for p in self._parts()}

    # -- part definitions ---------------------------------------------------------------------
    def _parts(self) -> list[Part]:
        cfg = self.cfg
        k_host, k_port = cfg.kafka.broker_host_port
        s3 = urlparse(cfg.lake.s3_endpoint)
        return [
            Part("kafka", [k_port, cfg.kafka.controller_port], self._kafka_cmd, self._kafka_health,
                 self._kafka_prepare, endpoint=f"{k_host}:{k_port}"),
            Part("hbase", [cfg.hbase.zookeeper_port], self._hbase_cmd, self._hbase_master_health,
                 self._hbase_prepare, endpoint=f"zookeeper 127.0.0.1:{cfg.hbase.zookeeper_port}"),
            Part("hbase-thrift", [cfg.hbase.port], self._thrift_cmd, self._thrift_health,
                 self._hbase_prepare, endpoint=f"thrift {cfg.hbase.host}:{cfg.hbase.port}"),
            # moto grants every origin CORS by default: any web page could then read and
            # rewrite the lake through the operator's browser (see serve_s3 for the rest).
            Part("s3", [s3.port or 80], self._s3_cmd, self._s3_health,
                 env={"MOTO_DISABLE_GLOBAL_CORS": "1"}, endpoint=cfg.lake.s3_endpoint,
                 # "moto.server": started as `python -m moto.server` by an older Tally
                 owns=lambda cmd: ("serve_s3" in cmd or "moto.server" in cmd)
                 and f"-p\0{s3.port or 80}" in cmd),
        ]

    def _marker(self, part: str) -> str:
        return f"-Dtally.part={part}@{self.state}"

    # Kafka
    def _kafka_prepare(self) -> None:
        cfg = self.cfg.kafka
        kdir = self.state / "kafka"
        data = kdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        host, port = cfg.broker_host_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cfg.controller_port}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{cfg.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(cfg.max_message_bytes),
            "replica.fetch.max.bytes": str(cfg.max_message_bytes),
            "log.retention.hours": "-1",
            "log.retention.bytes": "-1",
        }
        (kdir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self._log4j(kdir / "log4j2.properties", "kafka")
        if not (data / "meta.properties").exists():
            cluster_id = kafka_cluster_id()
            res = subprocess.run(
                [java_bin(), "-Xmx256m", f"-Dlog4j2.configurationFile={kdir / 'log4j2.properties'}",
                 "-cp", classpath(self.lib / "kafka"), "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(kdir / "server.properties")],
                capture_output=True, text=True)
            if res.returncode != 0:
                raise StackError(f"kafka: formatting storage failed: {res.stdout}{res.stderr}".strip())

    def _kafka_cmd(self) -> list[str]:
        kdir = self.state / "kafka"
        heap = self.cfg.kafka.heap_mb
        return [java_bin(), self._marker("kafka"), f"-Xms{min(heap, 256)}m", f"-Xmx{heap}m",
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={kdir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.log_dir}",
                "-cp", classpath(self.lib / "kafka"), "kafka.Kafka", str(kdir / "server.properties")]

    def _kafka_health(self) -> str:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.cfg.kafka.bootstrap_servers,
                                 request_timeout_ms=5000)
        try:
            topics = admin.list_topics()
            return f"{len([t for t in topics if not t.startswith('__')])} topics"
        finally:
            admin.close()

    # HBase
    def _hbase_prepare(self) -> None:
        hdir = self.state / "hbase"
        conf = hdir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (hdir / "tmp").mkdir(exist_ok=True)
        props = {
            "hbase.cluster.distributed": "false",
            "hbase.rootdir": (hdir / "data").as_uri(),
            "hbase.tmp.dir": str(hdir / "tmp"),
            "hbase.zookeeper.quorum": "127.0.0.1",
            "hbase.zookeeper.property.clientPort": str(self.cfg.hbase.zookeeper_port),
            "hbase.zookeeper.property.dataDir": str(hdir / "zookeeper"),
            "hbase.unsafe.stream.capability.enforce": "false",
            "hbase.master.hostname": "127.0.0.1",
            "hbase.regionserver.hostname": "127.0.0.1",
            "hbase.master.port": "0",
            "hbase.regionserver.port": "0",
            "hbase.master.info.port": "-1",
            "hbase.regionserver.info.port": "-1",
            "hbase.thrift.info.port": "-1",
            "hbase.regionserver.thrift.server.type": "threadpool",
            "hbase.regionserver.thrift.framed": "false",
            "hbase.regionserver.thrift.compact": "false",
            "hbase.thrift.server.socket.read.timeout": "600000",
            "hbase.client.retries.number": "10",
            "hbase.regionserver.handler.count": "16",
        }
        xml = ["<?xml version=\"1.0\"?>", "<configuration>"]
        xml += [f"  <property><name>{k}</name><value>{v}</value></property>" for k, v in props.items()]
        xml.append("</configuration>")
        (conf / "hbase-site.xml").write_text("\n".join(xml) + "\n")
        self._log4j(conf / "log4j2-master.properties", "hbase")
        self._log4j(conf / "log4j2-thrift.properties", "hbase-thrift")

    def _hbase_java(self, part: str, heap_mb: int, log4j: str) -> list[str]:
        conf = self.state / "hbase" / "conf"
        return [java_bin(), self._marker(part), f"-Xmx{heap_mb}m", "-XX:+UseG1GC",
                "-Djava.net.preferIPv4Stack=true", "-Djava.awt.headless=true",
                f"-Dhbase.log.dir={self.log_dir}", f"-Dlog4j2.configurationFile={conf / log4j}",
                *HBASE_JDK17_OPTS, "-cp", f"{conf}:{self.lib / 'hbase'}/*"]

    def _hbase_cmd(self) -> list[str]:
        return self._hbase_java("hbase", self.cfg.hbase.heap_mb, "log4j2-master.properties") + [
            "org.apache.hadoop.hbase.master.HMaster", "start"]

    def _thrift_cmd(self) -> list[str]:
        h = self.cfg.hbase
        return self._hbase_java("hbase-thrift", h.thrift_heap_mb, "log4j2-thrift.properties") + [
            "org.apache.hadoop.hbase.thrift.ThriftServer", "-b", h.host, "-p", str(h.port),
            "-threadpool", "start"]

    def _hbase_master_health(self) -> str:
        # The master is healthy when ZooKeeper answers and the Thrift server can list tables;
        # without Thrift, ZooKeeper's "ruok" is the best we can ask.
        with socket.create_connection(("127.0.0.1", self.cfg.hbase.zookeeper_port), timeout=3) as s:
            s.sendall(b"ruok")
            answer = s.recv(16)
        if answer != b"imok":
            raise StackError(f"zookeeper answered {answer!r}")
        return "zookeeper imok"

    def _thrift_health(self) -> str:
        import happybase

        conn = happybase.Connection(self.cfg.hbase.host, self.cfg.hbase.port,
                                    timeout=self.cfg.hbase.timeout_ms, autoconnect=True)
        try:
            tables = conn.tables()
            return f"{len(tables)} tables"
        finally:
            conn.close()

    # S3 (moto)
    def _s3_cmd(self) -> list[str]:
        u = urlparse(self.cfg.lake.s3_endpoint)
        main = (f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); "
                "from tally.devstack.stack import serve_s3; serve_s3(sys.argv[1:])")
        return [sys.executable, "-c", main, "-H", u.hostname or "127.0.0.1",
                "-p", str(u.port or 80)]

    def _s3_health(self) -> str:
        from adapters.lake import s3_client

        buckets = s3_client(self.cfg).list_buckets().get("Buckets", [])
        return f"{len(buckets)} buckets (in memory only)"

    def _log4j(self, path: Path, part: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(LOG4J2_TEMPLATE.format(log=self.log_dir / f"{part}.log", level="INFO"))

    # -- processes -----------------------------------------------------------------------------
    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The pid of a running part started from this state directory, or None."""
        try:
            pid = int(self.pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie is not running
            return None
        part = self.parts.get(name)
        if part is not None and part.owns is not None:
            return pid if part.owns(cmdline) else None
        return pid if self._marker(name) in cmdline else None

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 20) -> str:
        chunks = []
        for path in (self.log_dir / f"{name}.out", self.log_path(name)):
            try:
                text = path.read_text(errors="replace").strip().splitlines()
            except OSError:
                continue
            if text:
                chunks.append(f"--- {path}\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks) or "(no log output)"

    def _check_ports(self, part: Part) -> None:
        for port in part.ports:
            if not port_free("127.0.0.1", port):
                raise PortInUseError(
                    f"{part.name}: port {port} is held by {holder_of(port)}; stop it or "
                    f"configure another port (see docs/stack.md, 'Ports')")

    def _start(self, part: Part) -> int:
        part.prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{part.name}.out", "ab")
        env = {k: v for k, v in {**os.environ, **part.env}.items() if v is not None}
        proc = subprocess.Popen(part.command(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.state, env=env,
                                start_new_session=True)
        out.close()
        self.pid_file(part.name).write_text(str(proc.pid))
        return proc.pid

    def _wait_healthy(self, part: Part, deadline: float) -> str:
        last = ""
        while time.monotonic() < deadline:
            if self.pid(part.name) is None:
                # A process being exec'd or renaming itself (nginx) shows no command line for an
                # instant: only a second look decides.
                time.sleep(0.5)
                if self.pid(part.name) is None:
                    raise StackError(f"{part.name}: exited during start-up\n"
                                     f"{self.log_tail(part.name)}")
            try:
                return part.health()
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise StackError(f"{part.name}: not healthy after {self.cfg.stack.start_timeout_s}s "
                         f"({last})\n{self.log_tail(part.name)}")

    # -- commands ------------------------------------------------------------------------------
    def up(self) -> dict[str, str]:
        """Start what is missing, wait until healthy, create topics, tables, lake and bucket."""
        t0 = time.monotonic()
        ensure_jars(self.cfg)
        started, details = self.start_parts(list(self.parts.values()))
        from tally.devstack import provision

        provision.provision_all(self.cfg)
        log.progress(f"stack up: healthy in {time.monotonic() - t0:.1f}s "
                     f"(started: {', '.join(started) or 'nothing'})")
        return details

    def start_parts(self, parts: list[Part], what: str = "stack up"
                    ) -> tuple[list[str], dict[str, str]]:
        """Start those of ``parts`` that are not running and wait until all answer:
        (names started, health detail per part). A held port refuses before anything starts."""
        self.state.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = []
        for part in parts:
            if self.pid(part.name) is None:
                self._check_ports(part)
        for part in parts:
            if self.pid(part.name) is None:
                pid = self._start(part)
                started.append(part.name)
                log.progress(f"  {part.name:<13} started (pid {pid}), log {self.log_path(part.name)}")
            else:
                log.progress(f"  {part.name:<13} already running (pid {self.pid(part.name)})")
        deadline = time.monotonic() + self.cfg.stack.start_timeout_s
        details: dict[str, str] = {}
        with ThreadPoolExecutor(len(parts)) as pool:
            futures = {part.name: pool.submit(self._wait_healthy, part, deadline) for part in parts}
            errors = []
            for name, fut in futures.items():
                try:
                    details[name] = fut.result()
                    log.progress(f"  {name:<13} healthy: {details[name]}")
                except StackError as exc:
                    errors.append(str(exc))
            if errors:
                raise StackError(f"{what} failed:\n" + "\n".join(errors))
        return started, details

    def down(self) -> list[str]:
        stopped = []
        for name in self.stop_order:
            pid = self.pid(name)
            if pid is None:
                self.pid_file(name).unlink(missing_ok=True)
                continue
            self._stop_pid(name, pid)
            self.pid_file(name).unlink(missing_ok=True)
            stopped.append(name)
            note = (" (it keeps data in memory only: its buckets and objects are gone; "
                    "the file:// lake is kept)") if name == "s3" else ""
            log.progress(f"  {name:<13} stopped{note}")
        return stopped

    def _stop_pid(self, name: str, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.cfg.stack.stop_timeout_s
        while time.monotonic() < deadline:
            if self.pid(name) is None:
                break
            time.sleep(0.2)
        else:
            LOG.warning("%s did not stop after SIGTERM; sending SIGKILL", name)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Reap it if it is our child (tests start stacks in-process).
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    def status(self) -> dict[str, dict]:
        out: dict[str, dict] = {}

        def check(part: Part) -> dict:
            pid = self.pid(part.name)
            entry = {"part": part.name, "pid": pid, "running": pid is not None,
                     "endpoint": part.endpoint, "log": str(self.log_path(part.name))}
            if pid is None:
                entry.update(healthy=False, detail="not running")
                return entry
            try:
                entry.update(healthy=True, detail=part.health())
            except Exception as exc:  # noqa: BLE001
                entry.update(healthy=False, detail=f"{type(exc).__name__}: {exc}")
            return entry

        with ThreadPoolExecutor(len(self.parts)) as pool:
            for entry in pool.map(check, self.parts.values()):
                out[entry["part"]] = entry
        return out


def status_json(status: dict[str, dict]) -> str:
    return json.dumps({"healthy": all(p["healthy"] for p in status.values()),
                       "parts": list(status.values())}, indent=2)
