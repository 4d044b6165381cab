"""Builds the SparkSession a job receives; nothing here runs at import time.

Sessions run in UTC, send Spark's own (JVM) log lines to ``<state>/logs/spark.log`` instead of
the terminal, and add the connector jars resolved by Maven (Kafka source, S3A) that pyspark does
not bundle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from adapters import log
from schemas.config import TallyConfig

LOG = log.get("spark")

SPARK_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{ISO8601}} %-5p %c{{1}}: %m%n
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{{1}}: %m%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = error
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.console.ref = console
"""


def connector_jars(cfg: TallyConfig) -> list[str]:
    """Jars under infra/lib/spark that pyspark does not already bundle, and the jobs' own JVM
    part (infra/lib/udf: the event validator)."""
    import pyspark

    from adapters.paths import lib_dir

    bundled_dir = Path(pyspark.__file__).parent / "jars"
    bundled = {_artifact(p.name) for p in bundled_dir.glob("*.jar")}
    return sorted(str(p) for p in (lib_dir(cfg) / "spark").glob("*.jar")
                  if _artifact(p.name) not in bundled) + \
        sorted(str(p) for p in (lib_dir(cfg) / "udf").glob("*.jar"))


def _artifact(jar: str) -> str:
    """'kafka-clients-3.9.2.jar' -> 'kafka-clients'."""
    stem = jar[:-4]
    parts = stem.split("-")
    for i, part in enumerate(parts):
        if part[:1].isdigit():
            return "-".join(parts[:i])
    return stem


def log4j_file(cfg: TallyConfig, level: str = "WARN") -> Path:
    logs = cfg.state_path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / "spark-log4j2.properties"
    path.write_text(SPARK_LOG4J2.format(log=logs / "spark.log", level=level))
    return path


def java_options(cfg: TallyConfig, log_to_file: bool = True) -> str:
    """The JVM flags of the driver and the executors; ``log_to_file`` sends Spark's log lines to
    ``<state>/logs/spark.log`` (executors on a cluster log where their cluster manager puts them)."""
    # The event validation compiles to one whole-stage-codegen method above HotSpot's 8,000-byte
    # limit for JIT compilation; without this flag it runs in the bytecode interpreter (about a
    # third of the parse's CPU in processNext), on every record, in each of the three queries.
    opts = "-XX:-DontCompileHugeMethods"
    if log_to_file:
        opts = f"-Dlog4j2.configurationFile={log4j_file(cfg, cfg.spark.log_level).as_uri()} {opts}"
    if cfg.spark.java_options.strip():
        opts = f"{opts} {cfg.spark.java_options.strip()}"
    return opts


def base_conf(cfg: TallyConfig, with_jars: bool = True,
              master: str | None = None) -> dict[str, str]:
    """The settings of every session; ``master`` is the one it will run on (None: decided by
    spark-submit)."""
    java_opts = java_options(cfg)
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.driver.extraJavaOptions": java_opts,
        "spark.executor.extraJavaOptions": java_opts,
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        # Commit a micro-batch's state by writing a changelog file instead of uploading a
        # snapshot of every store each batch (snapshots go in the background). Spark reads
        # existing snapshot checkpoints with it on, and can turn it off again.
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # How often a file sink compacts its log (and drops entries past archive.sink_retention).
        "spark.sql.streaming.fileSink.log.compactInterval": str(cfg.archive.sink_log_compact_batches),
    }
    conf.update(s3a_conf(cfg))
    if with_jars:
        conf.update(jars_conf(cfg, master))
    if _is_local(master):
        # Spark's scratch (shuffle blocks, pyspark's files) in the state directory, not /tmp: a
        # driver that is killed cannot delete it, and what it leaves stays with its state.
        local_dir = cfg.state_path / "spark-local"
        local_dir.mkdir(parents=True, exist_ok=True)
        conf["spark.local.dir"] = str(local_dir)
    return conf


def _is_local(master: str | None) -> bool:
    return bool(master) and master.startswith("local")


def jars_conf(cfg: TallyConfig, master: str | None) -> dict[str, str]:
    """How a session gets the connector jars. A local master with no JVM started yet: on the
    driver's class path, read where they lie. ``spark.jars`` would copy all of them (the AWS SDK
    bundle alone is 655 MB) into a fresh scratch directory for every session, left behind in full
    whenever a driver is killed. A cluster master, or a running JVM without them on its class
    path: ``spark.jars`` (the executors fetch them; a running JVM's class path cannot change)."""
    from pyspark import SparkContext

    jars = connector_jars(cfg)
    if not jars:
        return {}
    if SparkContext._gateway is not None:
        return {} if set(jars) <= _jvm_class_path() else {"spark.jars": ",".join(jars)}
    if _is_local(master):
        return {"spark.driver.extraClassPath": os.pathsep.join(jars)}
    return {"spark.jars": ",".join(jars)}


def _jvm_class_path() -> set[str]:
    """The class path the running JVM was started with."""
    from pyspark import SparkContext

    return set(str(SparkContext._jvm.System.getProperty("java.class.path")).split(os.pathsep))


def s3a_conf(cfg: TallyConfig) -> dict[str, str]:
    """Hadoop S3A settings for the configured endpoint (credentials from the config or the
    standard AWS chain; nothing secret is written here)."""
    from adapters.lake import s3_credentials

    if not cfg.lake.s3_endpoint:
        return {}
    conf = {
        "spark.hadoop.fs.s3a.endpoint": cfg.lake.s3_endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": cfg.lake.s3_region,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(cfg.lake.s3_endpoint.startswith("https")).lower(),
        "spark.hadoop.fs.s3a.change.detection.mode": "none",
        # How long a job keeps retrying an unreachable lake before it fails (S3A's and the AWS
        # SDK's retries multiply; the defaults ride out a blip of a minute or two).
        "spark.hadoop.fs.s3a.retry.limit": str(cfg.lake.s3_retry_limit),
        "spark.hadoop.fs.s3a.attempts.maximum": str(min(cfg.lake.s3_retry_limit, 5)),
    }
    creds = s3_credentials(cfg)
    if creds:
        conf["spark.hadoop.fs.s3a.access.key"] = creds["aws_access_key_id"]
        conf["spark.hadoop.fs.s3a.secret.key"] = creds["aws_secret_access_key"]
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = \
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    return conf


def build_session(cfg: TallyConfig, app_name: str, master: str | None = None,
                  extra: Mapping[str, Any] | None = None, with_jars: bool = True):
    import sys
    import warnings

    # pyspark 4.2 warns on every start that it does not fully support pandas 3; Tally does not
    # use pandas-on-Spark or Arrow UDFs, so this is noise on the terminal.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    submitted = master == "submit"
    # Under spark-submit its --master, --jars, --archives and --conf decide; the project's
    # settings only fill in what it was not given.
    given = submitted_conf() if submitted else {}
    runs_on = given.get("spark.master") if submitted else (master or cfg.spark.master)
    conf = {"spark.app.name": app_name, **base_conf(cfg, with_jars, runs_on), **(extra or {})}
    if submitted:
        conf = {k: v for k, v in conf.items() if k not in given}
    else:
        conf["spark.master"] = runs_on
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    return spark


# Signs, in a Spark failure's chain of causes, that the lake could not be reached.
_LAKE_SIGNS = ("SdkClientException", "Unable to execute HTTP request", "Connection refused",
               "Connection reset", "AWSClientIOException", "UnknownHostException",
               "ConnectTimeoutException", "AccessDeniedException", "Read-only file system",
               "Permission denied")


def _causes(exc: BaseException) -> list[str]:
    """The failure's chain as "Class: message" lines, outermost first (Java causes included)."""
    java = getattr(exc, "java_exception", None)
    out: list[str] = []
    seen = 0
    while java is not None and seen < 20:
        try:
            out.append(str(java.toString()).splitlines()[0])
            java = java.getCause()
        except Exception:  # noqa: BLE001 - the JVM may be gone already
            break
        seen += 1
    if not out:
        out = [line for line in str(exc).splitlines() if line.strip()][:1] or [type(exc).__name__]
    return out


def failure(exc: BaseException, what: str):
    """A Spark job's failure as one clear Tally error: the lake named when it was the cause
    (retriable), else the root cause in one line."""
    from schemas.errors import DependencyError, TallyError

    causes = _causes(exc)
    root = causes[-1][:300]
    if any(sign in c for c in causes for sign in _LAKE_SIGNS):
        return DependencyError("lake", f"{what} failed, the lake could not be read or written: {root}")
    return TallyError(f"{what} failed: {root}")


def is_spark_failure(exc: BaseException) -> bool:
    """Errors raised from the JVM through py4j or pyspark (not Tally's own, not Python bugs)."""
    from py4j.protocol import Py4JError

    try:
        from pyspark.errors import PySparkException
    except ImportError:  # pragma: no cover - older pyspark
        PySparkException = ()  # type: ignore[assignment]
    return isinstance(exc, (Py4JError, PySparkException))


def submitted_conf() -> dict[str, str]:
    """The conf spark-submit gave this driver (its JVM's ``spark.*`` system properties)."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


class _StopSignalHandler:
    """A ``sun.misc.SignalHandler`` in the driver's JVM that calls back into Python."""

    def __init__(self, stop):
        self._stop = stop

    def handle(self, _signal) -> None:
        self._stop()

    class Java:
        implements = ["sun.misc.SignalHandler"]


def route_stop_signals(spark, stop) -> None:
    """SIGTERM and SIGINT reaching the driver's JVM call ``stop`` instead of shutting the JVM
    down. A supervisor signals the whole process group (``kill -TERM -PGID``, systemd's
    KillMode=control-group, Ctrl-C); the JVM's own handler would exit it at once, under the
    Python side's queries. Under spark-submit it also makes a signal to the JVM alone (its main
    process) stop the job. A signal the JVM ignores (pyspark starts it with SIGINT ignored) stays
    ignored."""
    from pyspark.java_gateway import ensure_callback_server_started

    gateway = spark.sparkContext._gateway
    ensure_callback_server_started(gateway)
    jvm = spark.sparkContext._jvm
    handler = _StopSignalHandler(stop)
    for name in ("TERM", "INT"):
        jvm.sun.misc.Signal.handle(jvm.sun.misc.Signal(name), handler)


def stop_session(spark, timeout_s: float = 60.0) -> None:
    """Stop the session, then the JVM pyspark started for it (it exits when its stdin closes)
    and wait for it, so that nothing of the job outlives this process: systemd's KillMode=mixed
    SIGKILLs what is left of a unit once its main process exits. A JVM spark-submit started is
    this process's parent, and exits after it."""
    import subprocess

    from pyspark import SparkContext

    spark.stop()
    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is None:
        return
    proc.stdin.close()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        LOG.warning("the driver's JVM has not exited %.0fs after its session stopped", timeout_s)
