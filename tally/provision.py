"""Creates what the platform needs inside the running stack: Kafka topics, HBase tables
(pre-split at the salt values, with TTLs), the file:// lake and the bucket on the S3 endpoint.

Every step is idempotent; `tally stack up` runs them all after the parts are healthy, and tests
call them with their own names to stay isolated.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from schemas.config import TallyConfig
from schemas.rowkey import TableSpec, tables
from tally import PROJECT_ROOT, log
from tally.errors import StackError

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


def create_topics(cfg: TallyConfig, topics: dict[str, int] | None = None) -> list[str]:
    """Create the topics that are missing; returns the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topics = topics or {cfg.kafka.topic: cfg.kafka.partitions, cfg.kafka.dlq_topic: 1}
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers, request_timeout_ms=15000)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, n, 1, topic_configs={
                   "max.message.bytes": str(cfg.kafka.max_message_bytes),
                   "retention.ms": "-1"})
               for name, n in topics.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new, timeout_ms=15000)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()


def create_table(cfg: TallyConfig, spec: TableSpec, timeout_s: float = 180) -> str:
    """Create one HBase table (see create_hbase_tables); returns what the Admin API reported."""
    return create_hbase_tables(cfg, [spec], timeout_s)[0]


def create_hbase_tables(cfg: TallyConfig, specs: list[TableSpec], timeout_s: float = 180
                        ) -> list[str]:
    """Create HBase tables through the Java Admin API (Thrift v1 cannot pre-split), all in one
    JVM run; an existing table is left alone. Returns one 'created|exists <name> regions=N' line
    per table."""
    from tally.stack import java_bin, lib_dir

    source = PROJECT_ROOT / "infra" / "hbase" / "TallyAdmin.java"
    args: list[str] = []
    for spec in specs:
        buckets = cfg.hbase.salt_buckets if spec.salted else 1
        args += [*(["--"] if args else []), spec.name, str(buckets),
                 *[f"{fam}:{ttl}" for fam, ttl in spec.families]]
    with tempfile.TemporaryDirectory(prefix="tally-hbase-client-") as conf:
        # A client needs only to find ZooKeeper; the Admin API does the rest.
        Path(conf, "hbase-site.xml").write_text(
            "<?xml version=\"1.0\"?>\n<configuration>\n"
            "  <property><name>hbase.zookeeper.quorum</name><value>127.0.0.1</value></property>\n"
            f"  <property><name>hbase.zookeeper.property.clientPort</name>"
            f"<value>{cfg.hbase.zookeeper_port}</value></property>\n"
            "</configuration>\n")
        Path(conf, "log4j2.properties").write_text("status = error\nrootLogger.level = off\n")
        cmd = [java_bin(), "-Xmx256m", "-XX:TieredStopAtLevel=1",
               f"-Dlog4j2.configurationFile={conf}/log4j2.properties",
               "-cp", f"{conf}:{lib_dir(cfg) / 'hbase'}/*", str(source), *args]
        # A master that has just started answers Thrift before it accepts DDL ("Master is
        # initializing"): retry for a while before giving up.
        deadline = time.monotonic() + timeout_s
        while True:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith(("created ", "exists "))]
            if res.returncode == 0 and len(lines) == len(specs):
                return lines
            if time.monotonic() > deadline:
                break
            LOG.info("creating tables %s failed; retrying", ", ".join(s.name for s in specs))
            time.sleep(3)
    lines = (res.stdout + res.stderr).strip().splitlines()
    causes = [ln for ln in lines if "Exception" in ln and not ln.lstrip().startswith("at ")]
    raise StackError(f"hbase: creating table(s) {', '.join(s.name for s in specs)} failed: "
                     + ("\n".join(causes[:3]) or "\n".join(lines[-10:])))


def create_tables(cfg: TallyConfig) -> list[str]:
    import happybase

    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port, timeout=cfg.hbase.timeout_ms)
    try:
        existing = {t.decode() for t in conn.tables()}
    finally:
        conn.close()
    missing = [spec for spec in tables(cfg) if spec.name not in existing]
    if missing:
        LOG.info("creating tables %s", ", ".join(s.name for s in missing))
        create_hbase_tables(cfg, missing)
    return [s.name for s in missing]


def create_lake(cfg: TallyConfig) -> str:
    uri = cfg.lake_uri
    if uri.startswith("file://"):
        Path(uri[len("file://"):]).mkdir(parents=True, exist_ok=True)
    return uri


def create_bucket(cfg: TallyConfig, bucket: str | None = None) -> None:
    from botocore.exceptions import ClientError

    from tally.lake import s3_client

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


