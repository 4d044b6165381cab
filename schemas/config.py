"""The typed configuration of a Tally installation.

One object, :class:`TallyConfig`, built from defaults, then an optional TOML file, then
``TALLY_*`` environment variables (``TALLY_STATE_DIR``, ``TALLY_KAFKA__TOPIC``: section and key
joined by a double underscore). It is validated when it is built: unknown keys, wrong types and
out-of-range values are rejected with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from schemas.durations import parse_duration_ms
from schemas.errors import ConfigError

DEFAULT_EVENT_TYPES = ("view", "like", "dislike", "share", "comment")
ENV_PREFIX = "TALLY_"
# Environment variables that carry no config key: the config file, and fault-injection points
# used by the tests (TALLY_FAULT_*).
ENV_NOT_KEYS = frozenset({"TALLY_CONFIG"})
ENV_NOT_KEY_PREFIXES = ("TALLY_FAULT_",)


def _host_port(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: must be host:port, got {value!r}")
    return host, int(port)


@dataclass(frozen=True)
class KafkaConfig:
    section: ClassVar[str] = "kafka"
    bootstrap_servers: str = "127.0.0.1:9092"
    controller_port: int = 9093
    topic: str = "tally.events"
    dlq_topic: str = "tally.events.dlq"
    partitions: int = 6
    heap_mb: int = 512
    # Largest message the local broker accepts; larger poison pills are refused at the producer.
    max_message_bytes: int = 4 * 1024 * 1024
    request_timeout_ms: int = 15000
    delivery_timeout_ms: int = 60000
    linger_ms: int = 20
    batch_size: int = 256 * 1024
    compression: str = "lz4"

    def validate(self) -> None:
        _host_port(self.bootstrap_servers.split(",")[0], "kafka.bootstrap_servers")
        _positive(self, "controller_port", "partitions", "heap_mb", "max_message_bytes",
                  "request_timeout_ms", "delivery_timeout_ms", "batch_size")
        if self.linger_ms < 0:
            raise ConfigError("kafka.linger_ms: must be >= 0")
        if self.compression not in ("none", "gzip", "lz4", "zstd", "snappy"):
            raise ConfigError("kafka.compression: must be one of none, gzip, lz4, zstd, snappy")
        if self.topic == self.dlq_topic:
            raise ConfigError("kafka.dlq_topic: must differ from kafka.topic")

    @property
    def broker_host_port(self) -> tuple[str, int]:
        return _host_port(self.bootstrap_servers.split(",")[0], "kafka.bootstrap_servers")


@dataclass(frozen=True)
class HBaseConfig:
    section: ClassVar[str] = "hbase"
    host: str = "127.0.0.1"
    port: int = 9090  # the Thrift v1 server
    zookeeper_port: int = 2181
    table_prefix: str = "tally"
    salt_buckets: int = 16
    # Speed views live this long after they were written; must exceed batch.max_lag_days.
    speed_ttl_days: int = 7
    heap_mb: int = 1024
    thrift_heap_mb: int = 256
    timeout_ms: int = 10000
    pool_size: int = 4
    # How long one speed-view write keeps retrying (with backoff) before the batch fails.
    write_retry_s: int = 30

    def validate(self) -> None:
        _positive(self, "port", "zookeeper_port", "speed_ttl_days", "heap_mb",
                  "thrift_heap_mb", "timeout_ms", "pool_size")
        if not 1 <= self.salt_buckets <= 256:
            raise ConfigError("hbase.salt_buckets: must be between 1 and 256")
        if not self.table_prefix.replace("_", "").isalnum():
            raise ConfigError("hbase.table_prefix: must be letters, digits and '_'")

    @property
    def speed_table(self) -> str:
        return f"{self.table_prefix}_speed"

    @property
    def top_table(self) -> str:
        return f"{self.table_prefix}_top"

    @property
    def meta_table(self) -> str:
        return f"{self.table_prefix}_meta"


@dataclass(frozen=True)
class LakeConfig:
    section: ClassVar[str] = "lake"
    # Empty means file://<state_dir>/lake.
    uri: str = ""
    s3_endpoint: str = "http://127.0.0.1:5000"
    s3_region: str = "us-east-1"
    # Empty: the default AWS credential chain (environment, profile, instance role).
    s3_access_key: str = ""
    s3_secret_key: str = ""
    # The bucket `stack up` creates on the local S3 endpoint.
    bucket: str = "tally-lake"
    # Spark jobs' retries of a failing lake request (S3A's fs.s3a.retry.limit).
    s3_retry_limit: int = 7

    def validate(self) -> None:
        if self.uri and not self.uri.startswith(("file://", "s3://", "s3a://")):
            raise ConfigError("lake.uri: must start with file://, s3:// or s3a://")
        if self.s3_endpoint and not self.s3_endpoint.startswith(("http://", "https://")):
            raise ConfigError("lake.s3_endpoint: must be an http:// or https:// URL")
        if self.s3_retry_limit < 0:
            raise ConfigError("lake.s3_retry_limit: must be >= 0")


@dataclass(frozen=True)
class EventsConfig:
    section: ClassVar[str] = "events"
    types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    # An event more than this far after the receiving clock is rejected.
    max_future_ms: int = 3_600_000
    # An accepted event stamped more than this after its receiving clock is left out of the
    # speed views (counted in the progress record's ahead_of_clock; the batch counts it), so no
    # event moves the watermark past the receiving clock. At most stream.watermark.
    ahead_tolerance: str = "2 minutes"

    def validate(self) -> None:
        if not self.types:
            raise ConfigError("events.types: must name at least one event type")
        for t in self.types:
            if not t or len(t) > 64 or not all(c.isascii() and (c.isalnum() or c in "_-") for c in t):
                raise ConfigError(f"events.types: {t!r} must be 1-64 chars of [A-Za-z0-9_-]")
        if len(set(self.types)) != len(self.types):
            raise ConfigError("events.types: must not repeat a type")
        _positive(self, "max_future_ms")
        if parse_duration_ms(self.ahead_tolerance, "events.ahead_tolerance") < 0:
            raise ConfigError("events.ahead_tolerance: must be >= 0")  # pragma: no cover

    @property
    def ahead_tolerance_ms(self) -> int:
        return parse_duration_ms(self.ahead_tolerance, "events.ahead_tolerance")


@dataclass(frozen=True)
class SparkConfig:
    section: ClassVar[str] = "spark"
    master: str = "local[*]"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4
    log_level: str = "WARN"

    def validate(self) -> None:
        _positive(self, "shuffle_partitions")


@dataclass(frozen=True)
class ClusterConfig:
    """The local Spark standalone cluster (`tally cluster`) and what jobs submitted to it get."""

    section: ClassVar[str] = "cluster"
    host: str = "127.0.0.1"
    master_port: int = 7077
    # Spark's own defaults are 8080/8081; 8080 is the front door's (front.port).
    master_webui_port: int = 8090
    worker_port: int = 7078
    worker_webui_port: int = 8091
    worker_cores: int = 2
    worker_memory: str = "2g"
    # Each application's share of the worker: the streaming job holds its executor for as long
    # as it runs, so with all the worker's cores it would leave the nightly batch none.
    app_cores: int = 1
    executor_memory: str = "1g"
    daemon_heap_mb: int = 256
    # Where packed Python environments are cached; empty: <state>/cluster/env.
    env_dir: str = ""

    def validate(self) -> None:
        ports = ("master_port", "master_webui_port", "worker_port", "worker_webui_port")
        _positive(self, *ports, "worker_cores", "app_cores", "daemon_heap_mb")
        if self.app_cores > self.worker_cores:
            raise ConfigError("cluster.app_cores: must not exceed cluster.worker_cores")
        for name in ports:
            if getattr(self, name) >= 65536:
                raise ConfigError(f"cluster.{name}: must be below 65536")
        if len({getattr(self, n) for n in ports}) != len(ports):
            raise ConfigError(f"cluster: {', '.join(ports)} must all differ")
        for name in ("worker_memory", "executor_memory"):
            value = getattr(self, name)
            if not (value[:-1].isdigit() and value[-1:].lower() in ("m", "g")):
                raise ConfigError(f"cluster.{name}: must be a size like 512m or 2g, got {value!r}")

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"


@dataclass(frozen=True)
class StreamConfig:
    section: ClassVar[str] = "stream"
    trigger: str = "2 seconds"
    archive_trigger: str = "60 seconds"
    watermark: str = "10 minutes"
    # 0 means no cap per trigger (see the catch-up hazard in the README).
    max_offsets_per_trigger: int = 0

    def validate(self) -> None:
        if self.max_offsets_per_trigger < 0:
            raise ConfigError("stream.max_offsets_per_trigger: must be >= 0")
        if self.watermark_ms <= 0:
            raise ConfigError("stream.watermark: must be > 0")

    @property
    def watermark_ms(self) -> int:
        return parse_duration_ms(self.watermark, "stream.watermark")


@dataclass(frozen=True)
class ArchiveConfig:
    """The raw archive's file sink and its per-day index."""

    section: ClassVar[str] = "archive"
    # Entries of files committed longer ago than this are dropped from the sink's own log when
    # Spark compacts it (every sink_log_compact_batches batches); the per-day index and the
    # compaction manifests keep them. The nightly run covers every file within about two days of
    # its commit, so keep this at 3 days or more.
    sink_retention: str = "30 days"
    sink_log_compact_batches: int = 10

    def validate(self) -> None:
        if self.sink_retention_ms <= 0:
            raise ConfigError("archive.sink_retention: must be > 0")
        _positive(self, "sink_log_compact_batches")

    @property
    def sink_retention_ms(self) -> int:
        return parse_duration_ms(self.sink_retention, "archive.sink_retention")


@dataclass(frozen=True)
class BatchConfig:
    section: ClassVar[str] = "batch"
    # Days before this one (YYYY-MM-DD) are neither pending nor computed by the nightly run
    # (only `tally reprocess` computes them). Empty: no such limit.
    horizon_start: str = ""
    # The longest a closed day is expected to wait for its batch views (the speed views must be
    # kept longer: hbase.speed_ttl_days).
    max_lag_days: int = 3
    keep_versions: int = 5
    # A day is closed for a run once its end plus this has passed and the archive has committed
    # every record the topic held when the run started (waited for up to close_timeout_s).
    lateness: str = "15 minutes"
    close_timeout_s: float = 300.0
    # Copies of an event_id on different UTC days: the earliest day's copy counts, within this
    # many days; a day's version depends on its own raw data and that of the days before it.
    dedup_span_days: int = 1
    # The nightly run computes at most this many days (newest first); the rest stay pending.
    max_days_per_run: int = 30

    def validate(self) -> None:
        _positive(self, "max_lag_days", "keep_versions", "dedup_span_days", "max_days_per_run")
        if self.close_timeout_s < 0:
            raise ConfigError("batch.close_timeout_s: must be >= 0")
        if self.lateness_ms < 0:
            raise ConfigError("batch.lateness: must be >= 0")  # pragma: no cover
        if self.horizon_start:
            import datetime as _dt

            try:
                _dt.date.fromisoformat(self.horizon_start)
            except ValueError:
                raise ConfigError(f"batch.horizon_start: must be a day as YYYY-MM-DD, got "
                                  f"{self.horizon_start!r}") from None

    @property
    def lateness_ms(self) -> int:
        return parse_duration_ms(self.lateness, "batch.lateness")


@dataclass(frozen=True)
class ServeConfig:
    section: ClassVar[str] = "serve"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    api_keys: tuple[str, ...] = ()
    # With api_keys configured, writes always need a key in X-API-Key; reads only when this is on.
    read_requires_key: bool = False
    # POST /v1/events: at most this many bytes and events per request (contract: 1 MiB, 1000).
    max_body_bytes: int = 1024 * 1024
    max_events: int = 1000
    # Longest range a counts query may span, in days (contract: at least 7 at minute
    # granularity, at least 400 at hour and day); top-K uses max_range_days.
    max_range_days_minute: int = 7
    max_range_days: int = 400
    # Each worker keeps published batch views in memory up to this size (an LRU).
    cache_mb: int = 256
    # How long a worker reuses one listing of the publication log (0: list on every request).
    catalog_ttl_s: float = 2.0
    # Each worker keeps the speed part of top-K as hour totals up to this size (0: off); an
    # hour still open (not yet behind the speed layer's watermark) is read again in the
    # background once older than top_ttl_s (by the request itself once 4 times older).
    top_cache_mb: int = 64
    top_ttl_s: float = 2.0
    # Each worker keeps the speed minutes of closed hours per (video, event type, hour) that
    # counts queries read, up to this size (0: off).
    counts_cache_mb: int = 64
    # Counts take the hours still open from the same host-shared snapshots as top-K (about
    # top_ttl_s old at most, as the speed layer's own trigger; the answer's freshness says as of
    # when) instead of an HBase scan per request, while this worker answers at least
    # counts_shared_min_rate counts requests per second: a snapshot holds every video of the
    # hour, cheaper than many one-video scans, dearer than a few. Off: every request scans.
    counts_open_shared: bool = True
    counts_shared_min_rate: float = 50.0
    # How long a worker reuses the speed layer's progress record (0: read it on every request).
    progress_ttl_s: float = 1.0
    # Backend timeouts on the request path.
    hbase_timeout_ms: int = 3000
    hbase_retry_s: float = 0.5
    kafka_timeout_s: float = 10.0
    # gunicorn kills a worker whose request runs longer than this.
    request_timeout_s: int = 60
    # Requests per second per API key (or client address for requests without one), after
    # authentication, shared by every worker and instance of the state dir; 0 = off.
    rate_limit_per_s: float = 0.0
    rate_limit_burst: int = 50
    # Host names (besides the loopback names and the bind addresses) that requests may name in
    # their Host header; "*" allows any. Refuses DNS rebinding (docs/security.md).
    allowed_hosts: tuple[str, ...] = ()
    # `tally serve` and `tally front up` refuse a non-loopback bind without api_keys (anyone who
    # can reach the port could write events) unless this says writes may be open.
    open_writes: bool = False
    # `tally serve` (sync workers, which a slow client holds) binds a non-loopback address only
    # when this says a proxy that reads whole requests (the front door, an ALB) is the only way in.
    behind_proxy: bool = False

    def validate(self) -> None:
        _positive(self, "port", "workers", "max_body_bytes", "max_events", "cache_mb",
                  "hbase_timeout_ms", "kafka_timeout_s", "request_timeout_s", "rate_limit_burst")
        if self.rate_limit_per_s and not 0.001 <= self.rate_limit_per_s <= 100_000:
            raise ConfigError("serve.rate_limit_per_s: must be 0 (off) or 0.001 to 100000")
        for name in self.allowed_hosts:
            if name != "*" and (not name or not all(c.isalnum() or c in ".-_:[]" for c in name)):
                raise ConfigError(f"serve.allowed_hosts: {name!r} is not a host name or address "
                                  "(no port, no scheme; \"*\" for any)")
        if self.port >= 65536:
            raise ConfigError("serve.port: must be below 65536")
        if self.max_range_days_minute < 7:
            raise ConfigError("serve.max_range_days_minute: must be >= 7 (the contract serves "
                              "7 days at minute granularity)")
        if self.max_range_days < 400:
            raise ConfigError("serve.max_range_days: must be >= 400 (the contract serves 400 "
                              "days at hour and day granularity)")
        if self.max_events > 1000:
            raise ConfigError("serve.max_events: must be at most 1000 (the contract's limit)")
        if self.max_body_bytes > 1024 * 1024:
            raise ConfigError("serve.max_body_bytes: must be at most 1 MiB (the contract's limit)")
        for name in ("catalog_ttl_s", "hbase_retry_s", "rate_limit_per_s",
                     "top_cache_mb", "top_ttl_s", "counts_cache_mb", "counts_shared_min_rate",
                     "progress_ttl_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"serve.{name}: must be >= 0")
        for key in self.api_keys:
            if len(key) < 16 or not key.isascii() or not key.isprintable():
                raise ConfigError("serve.api_keys: each key must be at least 16 printable ASCII "
                                  "characters")


@dataclass(frozen=True)
class FrontConfig:
    """`tally front`: nginx in front of ``instances`` `tally serve` processes (README, "The front
    door"). Instance i listens on ``first_instance_port + i``; nginx on ``port``."""

    section: ClassVar[str] = "front"
    host: str = "127.0.0.1"
    port: int = 8080
    instances: int = 2
    first_instance_port: int = 8001
    # Passive health: an instance that failed max_fails times within fail_timeout_s gets no
    # requests for fail_timeout_s (nginx's own defaults: 1 and 10 s).
    max_fails: int = 1
    fail_timeout_s: int = 10
    connect_timeout_s: float = 1.0
    # Longer than serve.kafka_timeout_s, so an ingest waiting for Kafka's verdict is not cut.
    read_timeout_s: float = 30.0
    # Attempts per request (the first included) on error or timeout; POSTs only before sending.
    next_upstream_tries: int = 2
    # Idle connections to the instances each nginx worker keeps open.
    keepalive: int = 16
    worker_processes: int = 1
    # Slow clients wait in nginx's event loop, never in an instance: a request's headers must
    # arrive within header_timeout_s, each read of its body within body_timeout_s of the last
    # (nginx's client_header_timeout/client_body_timeout); idle keep-alive connections close
    # after keepalive_timeout_s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: int = 30

    def validate(self) -> None:
        _positive(self, "port", "instances", "first_instance_port", "max_fails", "fail_timeout_s",
                  "connect_timeout_s", "read_timeout_s", "next_upstream_tries", "keepalive",
                  "worker_processes", "header_timeout_s", "body_timeout_s", "keepalive_timeout_s")
        if self.instances > 16:
            raise ConfigError("front.instances: must be at most 16")
        if self.port >= 65536 or self.first_instance_port + self.instances > 65536:
            raise ConfigError("front.port: ports must be below 65536")
        if self.first_instance_port <= self.port < self.first_instance_port + self.instances:
            raise ConfigError(f"front.port: {self.port} is one of the instances' ports "
                              f"(front.first_instance_port + 0..{self.instances - 1})")

    @property
    def instance_ports(self) -> list[int]:
        return [self.first_instance_port + i for i in range(self.instances)]


@dataclass(frozen=True)
class StackConfig:
    section: ClassVar[str] = "stack"
    # Where `mvn -f infra/pom.xml package` puts the jars; empty: infra/lib of this checkout.
    lib_dir: str = ""
    # Seconds `stack up` waits for each part to answer a real request.
    start_timeout_s: int = 180
    stop_timeout_s: int = 30

    def validate(self) -> None:
        _positive(self, "start_timeout_s", "stop_timeout_s")


@dataclass(frozen=True)
class TallyConfig:
    state_dir: str = ".tally"
    stack: StackConfig = field(default_factory=StackConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    hbase: HBaseConfig = field(default_factory=HBaseConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    front: FrontConfig = field(default_factory=FrontConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate()
        if self.hbase.speed_ttl_days <= self.batch.max_lag_days:
            raise ConfigError(
                "hbase.speed_ttl_days: must be longer than batch.max_lag_days, so that no bucket "
                "after the batch horizon has already expired from the speed views")
        if self.events.ahead_tolerance_ms > self.stream.watermark_ms:
            raise ConfigError(
                "events.ahead_tolerance: must not exceed stream.watermark, so that no event moves "
                "the speed layer's watermark past the receiving clock")
        if self.front.read_timeout_s <= self.serve.kafka_timeout_s:
            raise ConfigError(
                "front.read_timeout_s: must be longer than serve.kafka_timeout_s, so nginx does not "
                "cut an ingest that is still waiting for Kafka's acknowledgement")

    # Derived locations ---------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser().resolve()

    @property
    def lake_uri(self) -> str:
        if self.lake.uri:
            return self.lake.uri.rstrip("/")
        return (self.state_path / "lake").as_uri()

    def replace(self, **changes: Any) -> "TallyConfig":
        """A copy with top-level keys or ``section={...}`` dicts of keys changed, re-validated."""
        data = to_dict(self)
        for key, value in changes.items():
            if isinstance(value, Mapping):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        return from_dict(data)


def _positive(section: Any, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"{section.section}.{name}: must be > 0")


def _coerce(value: Any, typ: Any, key: str, from_env: bool) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: must be a boolean")
    if typ is int:
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: must be an integer, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: must be an integer")
    if typ is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: must be a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: must be a number")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: must be a string")
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: must be a list of strings")
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], prefix: str, from_env: Mapping[str, bool]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}{key}"
            raise ConfigError(f"{where}: unknown config key (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}{f.name}"
        typ = hints[f.name]
        value = data[f.name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: must be a table of keys")
            kwargs[f.name] = _build(typ, value, f"{key}.", from_env)
        else:
            kwargs[f.name] = _coerce(value, typ, key, from_env.get(key, False))
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any], env_keys: Mapping[str, bool] | None = None) -> TallyConfig:
    cfg = _build(TallyConfig, data, "", env_keys or {})
    cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else (
            list(value) if isinstance(value, tuple) else value)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def to_toml(cfg: "TallyConfig") -> str:
    """The whole config as a TOML file that :func:`load_config` reads back to an equal object."""
    top, sections = [], []
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict):
            sections.append(f"\n[{key}]\n" + "".join(f"{k} = {_toml_value(v)}\n"
                                                    for k, v in value.items()))
        else:
            top.append(f"{key} = {_toml_value(value)}\n")
    return "".join(top) + "".join(sections)


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, bool]]:
    data: dict[str, Any] = {}
    marks: dict[str, bool] = {}
    sections = {f.name for f in dataclasses.fields(TallyConfig)
                if dataclasses.is_dataclass(typing.get_type_hints(TallyConfig)[f.name])}
    for name, value in environ.items():
        if (not name.startswith(ENV_PREFIX) or name in ENV_NOT_KEYS
                or name.startswith(ENV_NOT_KEY_PREFIXES)):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section not in sections:
                raise ConfigError(f"{name}: unknown config section {section!r}")
            data.setdefault(section, {})[key] = value
            marks[f"{section}.{key}"] = True
        else:
            data[rest] = value
            marks[rest] = True
    return data, marks


def load_config(path: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> TallyConfig:
    """Defaults, then the TOML file (``path`` or ``$TALLY_CONFIG``), then ``TALLY_*``, then
    ``overrides`` (what command-line flags such as ``--state-dir`` set)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = path or environ.get("TALLY_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"--config: no such file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
    env, marks = _env_overrides(environ)
    for key, value in env.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping):
            data.setdefault(key, {}).update(value)
        elif value is not None:
            data[key] = value
    return from_dict(data, marks)
