"""Creates what the platform needs inside the running stack: Kafka topics, HBase tables
(pre-split at the salt values, with TTLs), the file:// lake and the bucket on the S3 endpoint.

Every step is idempotent; `tally stack up` runs them all after the parts are healthy, and tests
call them with their own names to stay isolated. What the config decides about an existing part
is brought in line too: the TTLs of the HBase tables' families (hbase.speed_ttl_days) and the
events topic's timestamp type (LogAppendTime: the receiving clock is the broker's).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from adapters import log
from adapters.paths import PROJECT_ROOT
from schemas.config import TallyConfig
from schemas.errors import StackError
from schemas.rowkey import TableSpec, tables
from speed_layer.store import ttl_mismatches, ttl_text

LOG = log.get("provision")


def end_offsets(cfg: TallyConfig, topic: str | None = None) -> dict[int, int]:
    """The next offset of every partition of ``topic`` (default kafka.topic)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = topic or cfg.kafka.topic
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


# The events topic's records carry the broker's append time: the receiving clock of the contract
# (max_future_ms, the watermark's ahead tolerance) is the broker's, whatever a producer stamps, and
# a replay reads the same stored timestamps.
TIMESTAMP_TYPE = "message.timestamp.type"
EVENTS_TIMESTAMP_TYPE = "LogAppendTime"


def create_topics(cfg: TallyConfig, topics: dict[str, int] | None = None) -> list[str]:
    """Create the topics that are missing; returns the names created. The events topic
    (kafka.topic) is created with LogAppendTime, and an existing one with another timestamp type
    is altered to it (printing a line saying so)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topics = topics or {cfg.kafka.topic: cfg.kafka.partitions, cfg.kafka.dlq_topic: 1}
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers, request_timeout_ms=15000)
    try:
        existing = set(admin.list_topics())

        def configs(name: str) -> dict[str, str]:
            out = {"max.message.bytes": str(cfg.kafka.max_message_bytes), "retention.ms": "-1"}
            if name == cfg.kafka.topic:
                out[TIMESTAMP_TYPE] = EVENTS_TIMESTAMP_TYPE
            return out

        new = [NewTopic(name, n, 1, topic_configs=configs(name))
               for name, n in topics.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new, timeout_ms=15000)
            except TopicAlreadyExistsError:
                pass
        if cfg.kafka.topic in topics and cfg.kafka.topic in existing:
            old = _ensure_log_append_time(admin, cfg.kafka.topic)
            if old is not None:
                log.progress(f"  kafka         topic {cfg.kafka.topic}: {TIMESTAMP_TYPE} "
                             f"{old} -> {EVENTS_TIMESTAMP_TYPE}")
        return [t.name for t in new]
    finally:
        admin.close()


def topic_timestamp_type(admin, topic: str) -> str | None:
    """The topic's message.timestamp.type (its own or the broker default); None when the broker
    does not report it (no such topic)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    resource = ConfigResource(ConfigResourceType.TOPIC, topic, [TIMESTAMP_TYPE])
    res = admin.describe_configs([resource], config_filter="all")
    entry = res.get("topic", {}).get(topic, {}).get(TIMESTAMP_TYPE)
    return entry["value"] if entry else None


def _ensure_log_append_time(admin, topic: str) -> str | None:
    """Set the topic's message.timestamp.type to LogAppendTime unless it already is; returns the
    type it had when altered, None when nothing was done. Only that key is changed (an
    incremental alter), every other config of the topic stays."""
    from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType

    old = topic_timestamp_type(admin, topic)
    if old == EVENTS_TIMESTAMP_TYPE:
        return None
    res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                              {TIMESTAMP_TYPE: (AlterConfigOp.SET,
                                                                EVENTS_TIMESTAMP_TYPE)})],
                              incremental=True)
    result = res.get("topic", {}).get(topic)
    if result != "OK":
        raise StackError(f"kafka: setting {TIMESTAMP_TYPE}={EVENTS_TIMESTAMP_TYPE} on topic "
                         f"{topic} failed: {result}")
    return old or "unknown"


ADMIN_SOURCE = PROJECT_ROOT / "infra" / "hbase" / "TallyAdmin.java"


def admin_classes(cfg: TallyConfig) -> Path | None:
    """TallyAdmin compiled once (javac) into ``<lib dir>/tally-admin/<hash>``, the hash of its
    source and of the java that runs it, so that each create_hbase_tables call does not compile
    it again (source-file mode compiles on every run). None when it cannot be compiled or
    stored there (no javac, a read-only lib dir): the caller then runs the source file."""
    from adapters.paths import java_bin, lib_dir

    java = Path(java_bin()).resolve()
    digest = hashlib.sha256(ADMIN_SOURCE.read_bytes() + str(java).encode()).hexdigest()[:16]
    out = lib_dir(cfg) / "tally-admin" / digest
    if (out / "TallyAdmin.class").is_file():
        return out
    javac = java.parent / "javac"
    javac = str(javac) if javac.exists() else shutil.which("javac")
    if not javac:
        return None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    except OSError:
        return None
    try:
        res = subprocess.run([javac, "-nowarn", "-d", str(build), "-cp",
                              f"{lib_dir(cfg) / 'hbase'}/*", str(ADMIN_SOURCE)],
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            LOG.info("compiling %s failed; running it as a source file: %s", ADMIN_SOURCE,
                     res.stderr.strip()[-500:])
            return None
        try:
            os.rename(build, out)  # atomic: a concurrent build that got there first wins
        except OSError:
            pass
        return out if (out / "TallyAdmin.class").is_file() else None
    finally:
        shutil.rmtree(build, ignore_errors=True)


def create_table(cfg: TallyConfig, spec: TableSpec, timeout_s: float = 180) -> str:
    """Create one HBase table (see create_hbase_tables); returns what the Admin API reported."""
    return create_hbase_tables(cfg, [spec], timeout_s)[0]


def create_hbase_tables(cfg: TallyConfig, specs: list[TableSpec], timeout_s: float = 180,
                        alter_ttl: bool = False) -> list[str]:
    """Create HBase tables through the Java Admin API (Thrift v1 cannot pre-split), all in one
    JVM run; an existing table is left alone. Returns one 'created|exists <name> regions=N' line
    per table. With ``alter_ttl`` an existing table's families are brought to the specs' TTLs
    (Thrift v1 cannot alter them either): an 'altered <name> <family> ttl=<old>-><new>' (or
    'added <name> <family> ttl=<new>') line follows those lines for each family changed."""
    from adapters.paths import java_bin, lib_dir

    classes = admin_classes(cfg)
    args: list[str] = []
    for spec in specs:
        buckets = cfg.hbase.salt_buckets if spec.salted else 1
        args += [*(["--"] if args else []), spec.name, str(buckets),
                 *[f"{fam}:{ttl}" for fam, ttl in spec.families]]
    if alter_ttl:
        args.insert(0, "--alter-ttl")
    changed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tally-hbase-client-") as conf:
        # A client needs only to find ZooKeeper; the Admin API does the rest.
        Path(conf, "hbase-site.xml").write_text(
            "<?xml version=\"1.0\"?>\n<configuration>\n"
            "  <property><name>hbase.zookeeper.quorum</name><value>127.0.0.1</value></property>\n"
            f"  <property><name>hbase.zookeeper.property.clientPort</name>"
            f"<value>{cfg.hbase.zookeeper_port}</value></property>\n"
            "</configuration>\n")
        Path(conf, "log4j2.properties").write_text("status = error\nrootLogger.level = off\n")
        classpath = f"{conf}:{lib_dir(cfg) / 'hbase'}/*"
        main = [f"{classes}:{classpath}", "TallyAdmin"] if classes else [classpath, str(ADMIN_SOURCE)]
        cmd = [java_bin(), "-Xmx256m", "-XX:TieredStopAtLevel=1",
               f"-Dlog4j2.configurationFile={conf}/log4j2.properties", "-cp", *main, *args]
        # A master that has just started answers Thrift before it accepts DDL ("Master is
        # initializing"): retry for a while before giving up.
        deadline = time.monotonic() + timeout_s
        while True:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            out = res.stdout.splitlines()
            lines = [ln for ln in out if ln.startswith(("created ", "exists "))]
            # A run that failed half way may have altered some families already: keep what it
            # reported (a retry finds them in line and says nothing about them).
            changed += [ln for ln in out if ln.startswith(("altered ", "added "))]
            if res.returncode == 0 and len(lines) == len(specs):
                return lines + changed
            if time.monotonic() > deadline:
                break
            LOG.info("%s tables %s failed; retrying", "aligning" if alter_ttl else "creating",
                     ", ".join(s.name for s in specs))
            time.sleep(3)
    lines = (res.stdout + res.stderr).strip().splitlines()
    causes = [ln for ln in lines if "Exception" in ln and not ln.lstrip().startswith("at ")]
    raise StackError(f"hbase: {'altering' if alter_ttl else 'creating'} table(s) "
                     f"{', '.join(s.name for s in specs)} failed: "
                     + ("\n".join(causes[:3]) or "\n".join(lines[-10:])))


def create_tables(cfg: TallyConfig) -> list[str]:
    """Create the missing tables of the config and bring the family TTLs of the existing ones to
    the config's (hbase.speed_ttl_days), printing a line for each family altered. The TTLs are
    read over Thrift, so the JVM runs (once) only when a table is missing or a TTL differs.
    Returns the names of the tables created."""
    import happybase

    specs = tables(cfg)
    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port, timeout=cfg.hbase.timeout_ms)
    try:
        existing = {t.decode() for t in conn.tables()}
        differ = ttl_mismatches(conn, [s for s in specs if s.name in existing])
    finally:
        conn.close()
    missing = [spec for spec in specs if spec.name not in existing]
    to_alter = {m.table for m in differ}
    if not missing and not to_alter:
        return []
    if missing:
        LOG.info("creating tables %s", ", ".join(s.name for s in missing))
    for m in differ:
        LOG.info("altering %s", m.describe())
    out = create_hbase_tables(cfg, [s for s in specs if s.name in to_alter or s in missing],
                              alter_ttl=bool(to_alter))
    for line in out:
        word, *rest = line.split(" ")
        if word == "altered":  # altered <table> <family> ttl=<old>-><new>
            table, fam, ttl = rest
            old, new = (int(v) for v in ttl[len("ttl="):].split("->"))
            log.progress(f"  hbase         table {table} family {fam}: TTL {ttl_text(old)} -> "
                         f"{ttl_text(new)} (altered)")
        elif word == "added":  # added <table> <family> ttl=<new>
            table, fam, ttl = rest
            log.progress(f"  hbase         table {table}: family {fam} added with TTL "
                         f"{ttl_text(int(ttl[len('ttl='):]))}")
    if to_alter:
        # What HBase reports now, not what the Admin run printed, decides.
        conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port, timeout=cfg.hbase.timeout_ms)
        try:
            still = ttl_mismatches(conn, [s for s in specs if s.name in to_alter])
        finally:
            conn.close()
        if still:
            raise StackError("hbase: TTL not altered: " + "; ".join(m.describe() for m in still))
    return [s.name for s in missing]


def create_lake(cfg: TallyConfig) -> str:
    uri = cfg.lake_uri
    if uri.startswith("file://"):
        Path(uri[len("file://"):]).mkdir(parents=True, exist_ok=True)
    return uri


def create_bucket(cfg: TallyConfig, bucket: str | None = None) -> None:
    from botocore.exceptions import ClientError

    from adapters.lake import s3_client

    client = s3_client(cfg)
    bucket = bucket or cfg.lake.bucket
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


def provision_all(cfg: TallyConfig) -> None:
    created = create_topics(cfg)
    if created:
        log.progress(f"  kafka         topics created: {', '.join(created)}")
    made = create_tables(cfg)
    if made:
        log.progress(f"  hbase         tables created: {', '.join(made)}")
    create_lake(cfg)
    create_bucket(cfg)


