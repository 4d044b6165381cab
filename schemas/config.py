"""The typed configuration of a Tally installation.

One object, :class:`TallyConfig` (a pydantic-settings model), built by :func:`load_config` from
defaults, then an optional TOML file, then ``TALLY_*`` environment variables (``TALLY_STATE_DIR``,
``TALLY_KAFKA__TOPIC``: section and key joined by a double underscore), then the command line's
flags. It is validated when it is built, and every limit is declared on its field (``Field(gt=0)``,
a pattern, a ``Literal`` of choices, a validator in the field's type); rules that join keys are
model validators. A key in a file that names no setting, a wrong type or a value out of range is a
:class:`~schemas.errors.ConfigError` that names the key (``kafka.partitions: must be > 0``). An
environment variable that names no setting never breaks a command: it is reported once, as a
warning on the ``tally.config`` logger that names the variable (and the setting it may mean).

docs/configuration.md is generated from these models (``python -m tally.devstack.configdoc``).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import difflib
import functools
import json
import logging
import os
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Mapping

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      StringConstraints, TypeAdapter, ValidationError, model_validator)
from pydantic.fields import FieldInfo
from pydantic_settings import (BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource,
                               SettingsConfigDict, TomlConfigSettingsSource)

from schemas.durations import parse_duration_ms
from schemas.errors import ConfigError

DEFAULT_EVENT_TYPES = ("view", "like", "dislike", "share", "comment")
ENV_PREFIX = "TALLY_"
# Environment variables of Tally that carry no setting: the config file and the checkout the
# scheduled jobs run from (infra/schedule).
ENV_NOT_KEYS = frozenset({"TALLY_CONFIG", "TALLY_HOME"})

log = logging.getLogger("tally.config")


# Limits in words ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A field's limit in words, kept in its ``Annotated`` metadata next to the limit itself.

    ``text`` replaces pydantic's wording when a declared constraint fails (a pattern, a bound)
    and is what docs/configuration.md shows; ``why`` follows a failed bound in parentheses;
    ``kind`` names the value's form in the docs (``duration``, ``host:port``); ``secret`` keeps
    the value out of error messages."""

    text: str = ""
    why: str = ""
    kind: str = ""
    secret: bool = False


class RuleError(ValueError):  # a ValueError, so pydantic collects it with the others
    """Raised by a model validator for a rule that joins keys: ``key`` (relative to the model
    that checks it; "" for the model itself) is the one the message names."""

    def __init__(self, key: str, rule: str):
        self.key = key
        self.rule = rule
        super().__init__(rule)


def _as_tuple(value: Any) -> Any:
    # TOML and JSON have arrays, not tuples: a list of strings is the file's form of the field.
    return tuple(value) if isinstance(value, list) else value


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat a type")
    return values


def _host_port(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: must be host:port, got {value!r}")
    return host, int(port)


def _servers(value: str) -> str:
    for server in value.split(","):
        if not _is_host_port(server.strip()):
            raise ValueError(f"must be host:port (a comma-separated list), got {server.strip()!r}")
    return value


def _is_host_port(value: str) -> bool:
    try:
        _host_port(value, "")
    except ConfigError:
        return False
    return True


def _duration(min_ms: int) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            ms = parse_duration_ms(text, "duration")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("duration: ")) from None
        if ms < min_ms:
            raise ValueError(f"must be > {min_ms - 1}" if min_ms else f"must be >= {min_ms}")
        return text
    return check


def _day(text: str) -> str:
    if text:
        try:
            _dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"must be a day as YYYY-MM-DD, got {text!r}") from None
    return text


def _off_or_rate(value: float) -> float:
    if 0 < value < 0.001:
        raise ValueError("must be 0 (off) or 0.001 to 100000")
    return value


# The types of the fields, with their limits ---------------------------------------------------

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Port = Annotated[int, Field(gt=0, lt=65536)]
Duration = Annotated[str, AfterValidator(_duration(0)), Rule(kind="duration")]
PositiveDuration = Annotated[str, AfterValidator(_duration(1)), Rule(kind="duration", text="> 0")]
Size = Annotated[str, Field(pattern=r"^[0-9]+[mMgG]$"),
                 Rule(kind="size", text="must be a size like 512m or 2g")]


class Section(BaseModel):
    """One ``[section]`` of the file; its keys are ``TALLY_<SECTION>__<KEY>`` in the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=True)
    section: ClassVar[str] = ""


class StackConfig(Section):
    """The local stack (`tally stack`): where its Java parts are and how long it waits for them."""

    section: ClassVar[str] = "stack"
    lib_dir: str = Field("", description="Where `mvn -f infra/pom.xml package` puts the jars; "
                                         "empty: infra/lib of this checkout.")
    start_timeout_s: Positive = Field(180, description="Seconds `stack up` waits for each part "
                                                       "to answer a real request.")
    stop_timeout_s: Positive = Field(30, description="Seconds `stack down` waits for each part "
                                                     "to stop.")


class KafkaConfig(Section):
    """The event log: the broker, the topics and the producer's settings."""

    section: ClassVar[str] = "kafka"
    bootstrap_servers: Annotated[str, AfterValidator(_servers),
                                 Rule(kind="host:port,...", text="each must be host:port")] = Field(
        "127.0.0.1:9092", description="The brokers, comma-separated host:port.")
    controller_port: Port = Field(9093, description="The local broker's KRaft controller port.")
    topic: str = Field("tally.events", description="The topic of accepted events.")
    dlq_topic: str = Field("tally.events.dlq", description="The dead-letter topic of refused "
                                                           "events; must differ from topic.")
    partitions: Positive = Field(6, description="Partitions of the events topic `stack up` "
                                                "creates (the DLQ gets 1).")
    heap_mb: Positive = Field(512, description="The local broker's JVM heap.")
    max_message_bytes: Positive = Field(
        4 * 1024 * 1024, description="Largest message the local broker accepts; larger poison "
                                     "pills are refused at the producer.")
    request_timeout_ms: Positive = Field(15000, description="The Kafka clients' request timeout.")
    delivery_timeout_ms: Positive = Field(60000, description="How long the producer keeps trying "
                                                             "to deliver an event.")
    linger_ms: NonNegative = Field(20, description="How long the producer waits to fill a batch.")
    batch_size: Positive = Field(256 * 1024, description="The producer's batch size in bytes.")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "lz4", description="The producer's compression codec.")

    @model_validator(mode="after")
    def _topics_differ(self) -> "KafkaConfig":
        """kafka.dlq_topic must differ from kafka.topic."""
        if self.topic == self.dlq_topic:
            raise RuleError("dlq_topic", "must differ from kafka.topic")
        return self

    @property
    def broker_host_port(self) -> tuple[str, int]:
        return _host_port(self.bootstrap_servers.split(",")[0].strip(), "kafka.bootstrap_servers")


class HBaseConfig(Section):
    """The speed views' store: HBase, reached through its Thrift v1 server."""

    section: ClassVar[str] = "hbase"
    host: str = Field("127.0.0.1", description="Where the Thrift server runs.")
    port: Port = Field(9090, description="The Thrift v1 server.")
    zookeeper_port: Port = Field(2181, description="The local stack's ZooKeeper.")
    table_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]*[A-Za-z0-9][A-Za-z0-9_]*$"),
                            Rule(text="must be letters, digits and '_'")] = Field(
        "tally", description="Prefix of the tables: <prefix>_speed, <prefix>_top, <prefix>_meta.")
    salt_buckets: Annotated[int, Field(ge=1, le=256)] = Field(
        16, description="Salt buckets of the speed table's row keys (pre-split regions).")
    speed_ttl_days: Positive = Field(
        7, description="Speed views live this long after they were written; must exceed "
                       "batch.max_lag_days.")
    heap_mb: Positive = Field(1024, description="The local HBase's JVM heap.")
    thrift_heap_mb: Positive = Field(256, description="The local Thrift server's JVM heap.")
    timeout_ms: Positive = Field(10000, description="Thrift socket timeout of the jobs' "
                                                    "connections.")
    pool_size: Positive = Field(4, description="Thrift connections per process and endpoint.")
    write_retry_s: NonNegative = Field(
        30, description="How long one speed-view write keeps retrying (with backoff) before the "
                        "batch fails.")

    @property
    def speed_table(self) -> str:
        return f"{self.table_prefix}_speed"

    @property
    def top_table(self) -> str:
        return f"{self.table_prefix}_top"

    @property
    def meta_table(self) -> str:
        return f"{self.table_prefix}_meta"


class LakeConfig(Section):
    """The lake: the raw archive and the published batch views, on local disk or S3."""

    section: ClassVar[str] = "lake"
    uri: Annotated[str, Field(pattern=r"^(?:$|(?:file|s3|s3a)://)"),
                   Rule(text="must start with file://, s3:// or s3a://")] = Field(
        "", description="Where the lake is: file:///path or s3a://bucket/prefix; empty means "
                        "file://<state_dir>/lake.")
    s3_endpoint: Annotated[str, Field(pattern=r"^(?:$|https?://)"),
                           Rule(text="must be an http:// or https:// URL")] = Field(
        "http://127.0.0.1:5000", description="The S3 endpoint; empty: AWS's own.")
    s3_region: str = Field("us-east-1", description="The region the S3 client signs for.")
    s3_access_key: Annotated[str, Rule(secret=True)] = Field(
        "", repr=False, description="Empty: the default AWS credential chain (environment, "
                                    "profile, instance role). Never commit keys.")
    s3_secret_key: Annotated[str, Rule(secret=True)] = Field(
        "", repr=False, description="The secret of s3_access_key.")
    bucket: str = Field("tally-lake", description="The bucket `stack up` creates on the local "
                                                  "S3 endpoint.")
    s3_retry_limit: NonNegative = Field(
        7, description="Spark jobs' retries of a failing lake request (S3A's fs.s3a.retry.limit) "
                       "before they fail.")


EventType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$"),
                      Rule(text="must be 1-64 chars of [A-Za-z0-9_-]")]


class EventsConfig(Section):
    """The event contract's configurable part."""

    section: ClassVar[str] = "events"
    types: Annotated[tuple[EventType, ...], BeforeValidator(_as_tuple), Field(min_length=1),
                     AfterValidator(_unique),
                     Rule(text="must name at least one event type")] = Field(
        DEFAULT_EVENT_TYPES, description="The event types accepted (distinct); in the environment "
                                         "comma-separated.")
    max_future_ms: Positive = Field(3_600_000, description="An event more than this far after "
                                                           "the receiving clock is rejected.")
    ahead_tolerance: Duration = Field(
        "2 minutes", description="An accepted event stamped more than this after its receiving "
                                 "clock is left out of the speed views (counted in the progress "
                                 "record's ahead_of_clock; the batch counts it), so no event moves "
                                 "the watermark past the receiving clock. At most "
                                 "stream.watermark.")

    @property
    def ahead_tolerance_ms(self) -> int:
        return parse_duration_ms(self.ahead_tolerance, "events.ahead_tolerance")


class SparkConfig(Section):
    """The Spark sessions `tally` starts itself (local unless master says otherwise)."""

    section: ClassVar[str] = "spark"
    master: str = Field("local[*]", description="The master of the sessions `tally` starts "
                                                "itself (not under spark-submit).")
    driver_memory: str = Field("2g", description="spark.driver.memory.")
    shuffle_partitions: Positive = Field(4, description="spark.sql.shuffle.partitions (the batch "
                                                        "raises it for large days).")
    log_level: str = Field("WARN", description="Spark's log level (its log file and console).")
    java_options: str = Field("", description="More JVM flags for the driver and the executors, "
                                              "after Tally's own (e.g. -XX:TieredStopAtLevel=1 "
                                              "-XX:+UseSerialGC: quicker start-up of short runs on "
                                              "few cores, slower long ones).")


class ClusterConfig(Section):
    """The local Spark standalone cluster (`tally cluster`) and what jobs submitted to it get."""

    section: ClassVar[str] = "cluster"
    host: str = Field("127.0.0.1", description="Where the master and the worker listen.")
    master_port: Port = 7077
    master_webui_port: Port = Field(8090, description="Spark's own default is 8080, the front "
                                                      "door's (front.port).")
    worker_port: Port = 7078
    worker_webui_port: Port = 8091
    worker_cores: Positive = Field(2, description="Cores the one worker offers.")
    worker_memory: Size = Field("2g", description="Memory the one worker offers.")
    app_cores: Positive = Field(
        1, description="Each application's share of the worker: the streaming job holds its "
                       "executor for as long as it runs, so with all the worker's cores it would "
                       "leave the nightly batch none. At most worker_cores.")
    executor_memory: Size = Field("1g", description="Each application's executor memory.")
    daemon_heap_mb: Positive = Field(256, description="The master's and the worker's own JVM "
                                                      "heap.")
    env_dir: str = Field("", description="Where packed Python environments are cached; empty: "
                                         "<state>/cluster/env.")

    PORTS: ClassVar[tuple[str, ...]] = ("master_port", "master_webui_port", "worker_port",
                                        "worker_webui_port")

    @model_validator(mode="after")
    def _cores_and_ports(self) -> "ClusterConfig":
        """cluster.app_cores must not exceed cluster.worker_cores; the four ports must differ."""
        if self.app_cores > self.worker_cores:
            raise RuleError("app_cores", "must not exceed cluster.worker_cores")
        if len({getattr(self, n) for n in self.PORTS}) != len(self.PORTS):
            raise RuleError("", f"{', '.join(self.PORTS)} must all differ")
        return self

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"


class StreamConfig(Section):
    """The streaming job (`tally stream`): the speed views and the raw archive."""

    section: ClassVar[str] = "stream"
    trigger: str = Field("2 seconds", description="The speed views' micro-batch trigger (a Spark "
                                                  "interval).")
    archive_trigger: str = Field("60 seconds", description="The raw archive's trigger.")
    watermark: PositiveDuration = Field("10 minutes", description="Events further behind the "
                                                                  "stream's event time are left to "
                                                                  "the batch.")
    max_offsets_per_trigger: NonNegative = Field(
        0, description="0 means no cap per trigger (see the catch-up hazard in the README).")
    ui_port: Annotated[int, Field(ge=0, lt=65536)] = Field(
        4040, description="The Spark UI of `tally stream` (its Structured Streaming tab) on "
                          "127.0.0.1; 0: off. Other Spark sessions run without a UI.")

    @property
    def watermark_ms(self) -> int:
        return parse_duration_ms(self.watermark, "stream.watermark")


class ArchiveConfig(Section):
    """The raw archive's file sink and its per-day index."""

    section: ClassVar[str] = "archive"
    sink_retention: PositiveDuration = Field(
        "30 days", description="Entries of files committed longer ago than this are dropped from "
                               "the sink's own log when Spark compacts it; the per-day index and "
                               "the compaction manifests keep them. The nightly run covers every "
                               "file within about two days of its commit: keep this at 3 days or "
                               "more.")
    sink_log_compact_batches: Positive = Field(10, description="The sink compacts its log every "
                                                               "this many batches.")

    @property
    def sink_retention_ms(self) -> int:
        return parse_duration_ms(self.sink_retention, "archive.sink_retention")


class BatchConfig(Section):
    """The batch layer (`tally batch`, `tally reprocess`)."""

    section: ClassVar[str] = "batch"
    horizon_start: Annotated[str, Field(pattern=r"^(?:$|[0-9]{4}-[0-9]{2}-[0-9]{2}$)"),
                             AfterValidator(_day),
                             Rule(text="must be a day as YYYY-MM-DD", kind="YYYY-MM-DD")] = Field(
        "", description="Days before this one are neither pending nor computed by the nightly run "
                        "(only `tally reprocess` computes them). Empty: no such limit.")
    max_lag_days: Positive = Field(
        3, description="The longest a closed day is expected to wait for its batch views (the "
                       "speed views must be kept longer: hbase.speed_ttl_days).")
    keep_versions: Positive = Field(5, description="Published versions kept per day.")
    lateness: Duration = Field(
        "15 minutes", description="A day is closed for a run once its end plus this has passed "
                                  "and the archive has committed every record the topic held when "
                                  "the run started (waited for up to close_timeout_s).")
    close_timeout_s: NonNegativeFloat = Field(300.0, description="How long a run waits for the "
                                                                 "archive to catch up with the "
                                                                 "topic.")
    dedup_span_days: Positive = Field(
        1, description="Copies of an event_id on different UTC days: the earliest day's copy "
                       "counts, within this many days.")
    max_days_per_run: Positive = Field(30, description="The nightly run computes at most this "
                                                       "many days (newest first); the rest stay "
                                                       "pending.")

    @property
    def lateness_ms(self) -> int:
        return parse_duration_ms(self.lateness, "batch.lateness")


HostName = Annotated[str, StringConstraints(pattern=r"^(?:\*|[A-Za-z0-9.\-_:\[\]]+)$"),
                     Rule(text="must be a host name or address (no port, no scheme; \"*\" for "
                               "any)")]
ApiKey = Annotated[str, StringConstraints(pattern=r"^[ -~]{16,}$"),
                   Rule(text="each key must be at least 16 printable ASCII characters",
                        secret=True)]


class ServeConfig(Section):
    """The REST API (`tally serve`) and its limits."""

    section: ClassVar[str] = "serve"
    host: str = Field("127.0.0.1", description="The API's bind address (loopback unless "
                                               "api_keys and behind_proxy allow more).")
    port: Port = Field(8000, description="The API's port.")
    workers: Positive = Field(2, description="gunicorn workers.")
    api_keys: Annotated[tuple[ApiKey, ...], BeforeValidator(_as_tuple), Rule(secret=True)] = Field(
        (), repr=False, description="Keys accepted in X-API-Key (each 16+ printable ASCII "
                                    "characters); in the environment comma-separated.")
    read_requires_key: bool = Field(False, description="With api_keys configured, writes always "
                                                       "need a key; reads only when this is on.")
    max_body_bytes: Annotated[int, Field(gt=0, le=1024 * 1024),
                              Rule(why="the contract's limit")] = Field(
        1024 * 1024, description="POST /v1/events: at most this many bytes per request.")
    max_events: Annotated[int, Field(gt=0, le=1000), Rule(why="the contract's limit")] = Field(
        1000, description="POST /v1/events: at most this many events per request.")
    max_range_days_minute: Annotated[int, Field(ge=7), Rule(
        why="the contract serves 7 days at minute granularity")] = Field(
        7, description="Longest range a counts query may span at minute granularity, in days.")
    max_range_days: Annotated[int, Field(ge=400), Rule(
        why="the contract serves 400 days at hour and day granularity")] = Field(
        400, description="Longest range of a counts query at hour and day granularity, and of "
                         "top-K, in days.")
    cache_mb: Positive = Field(256, description="Each worker keeps published batch views in "
                                                "memory up to this size (an LRU).")
    catalog_ttl_s: NonNegativeFloat = Field(
        2.0, description="How long a worker reuses one listing of the publication log (0: list on "
                         "every request).")
    top_cache_mb: NonNegative = Field(
        64, description="Each worker keeps the speed part of top-K as hour totals up to this size "
                        "(0: off); an open hour is read again in the background once older than "
                        "top_ttl_s.")
    top_ttl_s: NonNegativeFloat = Field(2.0, description="Age after which an open hour of the "
                                                         "top-K cache is read again.")
    counts_cache_mb: NonNegative = Field(
        64, description="Each worker keeps the speed minutes of closed hours that counts queries "
                        "read, up to this size (0: off).")
    counts_open_shared: bool = Field(
        True, description="Counts take the hours still open from the host-shared snapshots top-K "
                          "uses instead of an HBase scan per request, while this worker answers at "
                          "least counts_shared_min_rate counts requests per second.")
    counts_shared_min_rate: NonNegativeFloat = Field(
        50.0, description="Counts requests per second from which counts_open_shared applies.")
    progress_ttl_s: NonNegativeFloat = Field(
        1.0, description="How long a worker reuses the speed layer's progress record (0: read it "
                         "on every request).")
    hbase_timeout_ms: Positive = Field(3000, description="HBase timeout on the request path.")
    hbase_retry_s: NonNegativeFloat = Field(0.5, description="How long a request retries a "
                                                             "failing HBase read.")
    kafka_timeout_s: PositiveFloat = Field(10.0, description="How long an ingest waits for "
                                                             "Kafka's acknowledgement.")
    request_timeout_s: Positive = Field(60, description="gunicorn kills a worker whose request "
                                                        "runs longer than this.")
    rate_limit_per_s: Annotated[float, Field(ge=0, le=100_000), AfterValidator(_off_or_rate),
                                Rule(text="must be 0 (off) or 0.001 to 100000")] = Field(
        0.0, description="Requests per second per API key (or client address), after "
                         "authentication, shared by every worker and instance of the state dir; "
                         "0 = off.")
    rate_limit_burst: Positive = Field(50, description="The rate limit's burst: requests a "
                                                       "key may make at once.")
    allowed_hosts: Annotated[tuple[HostName, ...], BeforeValidator(_as_tuple)] = Field(
        (), description="Host names (besides the loopback names and the bind addresses) requests "
                        "may name in their Host header; \"*\" allows any (docs/security.md).")
    open_writes: bool = Field(False, description="`tally serve` and `tally front up` refuse a "
                                                 "non-loopback bind without api_keys unless this "
                                                 "says writes may be open.")
    behind_proxy: bool = Field(
        False, description="`tally serve` binds a non-loopback address only when this says a "
                           "proxy that reads whole requests (the front door, an ALB) is the only "
                           "way in.")
    access_log: bool = Field(
        False, description="One line per request on the tally.access logger (method, path, the "
                           "query's parameter names, status, duration_ms, bytes, client, key "
                           "bucket; never the key), at INFO whatever the log level.")


class FrontConfig(Section):
    """`tally front`: nginx in front of ``instances`` `tally serve` processes (README, "The front
    door"). Instance i listens on ``first_instance_port + i``; nginx on ``port``."""

    section: ClassVar[str] = "front"
    host: str = Field("127.0.0.1", description="nginx's bind address.")
    port: Port = Field(8080, description="nginx's port.")
    instances: Annotated[int, Field(gt=0, le=16)] = Field(2, description="`tally serve` "
                                                                         "processes behind nginx.")
    first_instance_port: Port = Field(8001, description="Instance i listens on this + i.")
    max_fails: Positive = Field(1, description="Passive health: an instance that failed this many "
                                               "times within fail_timeout_s gets no requests for "
                                               "fail_timeout_s.")
    fail_timeout_s: Positive = 10
    connect_timeout_s: PositiveFloat = Field(1.0, description="nginx's timeout to connect to an "
                                                              "instance.")
    read_timeout_s: PositiveFloat = Field(
        30.0, description="Longer than serve.kafka_timeout_s, so an ingest waiting for Kafka's "
                          "verdict is not cut.")
    next_upstream_tries: Positive = Field(2, description="Attempts per request (the first "
                                                         "included) on error or timeout; POSTs "
                                                         "only before sending.")
    keepalive: Positive = Field(16, description="Idle connections to the instances each nginx "
                                                "worker keeps open.")
    worker_processes: Positive = Field(1, description="nginx worker processes.")
    header_timeout_s: PositiveFloat = Field(
        10.0, description="A request's headers must arrive within this (slow clients wait in "
                          "nginx, never in an instance).")
    body_timeout_s: PositiveFloat = Field(30.0, description="Each read of a request's body must "
                                                            "come within this of the last.")
    keepalive_timeout_s: Positive = Field(30, description="Idle keep-alive connections close "
                                                          "after this.")

    @model_validator(mode="after")
    def _ports(self) -> "FrontConfig":
        """The instances' ports (first_instance_port + 0..instances-1) must be below 65536 and
        must not include front.port."""
        last = self.first_instance_port + self.instances - 1
        if last >= 65536:
            raise RuleError("first_instance_port", f"the instances' ports (up to {last}) must be "
                                                   "below 65536")
        if self.first_instance_port <= self.port <= last:
            raise RuleError("port", f"{self.port} is one of the instances' ports "
                                    f"(front.first_instance_port + 0..{self.instances - 1})")
        return self

    @property
    def instance_ports(self) -> list[int]:
        return [self.first_instance_port + i for i in range(self.instances)]


class MetricsConfig(Section):
    """Prometheus: the streaming job's ``/metrics`` and the batch runs' Pushgateway."""

    section: ClassVar[str] = "metrics"
    host: str = Field("127.0.0.1", description="Where the streaming job's driver serves "
                                               "/metrics.")
    stream_port: Annotated[int, Field(ge=0, lt=65536)] = Field(
        9108, description="The streaming job's /metrics port; 0: off.")
    pushgateway: Annotated[str, Field(pattern=r"^(?:$|https?://[^/?#]+/?$)"),
                           Rule(text="must be empty (off) or http(s)://host:port")] = Field(
        "", description="The Pushgateway that `batch`, `reprocess`, `rollback` and "
                        "`archive compact` push their run's metrics to; empty: no push.")
    push_timeout_s: PositiveFloat = Field(5.0, description="A push that takes longer is given "
                                                           "up (the run's outcome stands).")
    instance: str = Field("", description="The pushed runs' `instance` label; empty: the host "
                                          "name.")


# The whole config -----------------------------------------------------------------------------

# The sources of the TallyConfig being built by _build (load_config, replace): what a direct
# TallyConfig(...) call reads instead is its keyword arguments and the process's environment.
_SOURCES: contextvars.ContextVar[tuple[PydanticBaseSettingsSource, ...] | None] = \
    contextvars.ContextVar("tally_config_sources", default=None)


class TallyConfig(BaseSettings):
    """Every setting of an installation: ``state_dir`` and one model per section."""

    # Strict are the sections (a file's "6" is no integer); the environment's strings are read
    # by TallyEnvSource, so pydantic-settings' own coercion for strict models stays off here.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=True, frozen=True,
        extra="forbid", validate_default=True)

    state_dir: str = Field(".tally", description="Where an installation keeps its state: logs, "
                                                 "checkpoints, the file lake by default.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines on stderr: \"text\" (logfmt: ts=... level=... logger=... "
                            "msg=... key=value ...) or \"json\" (one JSON object per line); "
                            "--log-format overrides it.")
    stack: StackConfig = Field(default_factory=StackConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    hbase: HBaseConfig = Field(default_factory=HBaseConfig)
    lake: LakeConfig = Field(default_factory=LakeConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    front: FrontConfig = Field(default_factory=FrontConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        sources = _SOURCES.get()
        if sources is None:
            return init_settings, TallyEnvSource(settings_cls, os.environ)
        return (init_settings, *sources)

    @model_validator(mode="after")
    def _speed_outlives_batch_lag(self) -> "TallyConfig":
        """hbase.speed_ttl_days must be longer than batch.max_lag_days."""
        if self.hbase.speed_ttl_days <= self.batch.max_lag_days:
            raise RuleError("hbase.speed_ttl_days",
                            "must be longer than batch.max_lag_days, so that no bucket after the "
                            "batch horizon has already expired from the speed views")
        return self

    @model_validator(mode="after")
    def _ahead_within_watermark(self) -> "TallyConfig":
        """events.ahead_tolerance must not exceed stream.watermark."""
        if self.events.ahead_tolerance_ms > self.stream.watermark_ms:
            raise RuleError("events.ahead_tolerance",
                            "must not exceed stream.watermark, so that no event moves the speed "
                            "layer's watermark past the receiving clock")
        return self

    @model_validator(mode="after")
    def _nginx_outwaits_kafka(self) -> "TallyConfig":
        """front.read_timeout_s must be longer than serve.kafka_timeout_s."""
        if self.front.read_timeout_s <= self.serve.kafka_timeout_s:
            raise RuleError("front.read_timeout_s",
                            "must be longer than serve.kafka_timeout_s, so nginx does not cut an "
                            "ingest that is still waiting for Kafka's acknowledgement")
        return self

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
        """A copy with top-level keys or ``section={...}`` dicts of keys changed, re-validated
        (neither the file nor the environment is read again)."""
        data = to_dict(self)
        for key, value in changes.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return from_dict(data)


@functools.cache
def sections() -> dict[str, type[Section]]:
    """The sections of :class:`TallyConfig`, by name, in the order of the file."""
    return {name: f.annotation for name, f in TallyConfig.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, Section)}


@functools.cache
def setting_env_names() -> dict[str, str]:
    """Every setting's environment variable -> its dotted key (``TALLY_KAFKA__TOPIC`` ->
    ``kafka.topic``)."""
    names = {f"{ENV_PREFIX}{name.upper()}": name for name in TallyConfig.model_fields
             if name not in sections()}
    for sname, cls in sections().items():
        for key in cls.model_fields:
            names[f"{ENV_PREFIX}{sname.upper()}__{key.upper()}"] = f"{sname}.{key}"
    return names


# Environment variables ------------------------------------------------------------------------

_WARNED: set[str] = set()


def _not_a_setting(name: str) -> bool:
    return name in ENV_NOT_KEYS


def _settings_in(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``TALLY_*`` variables of ``environ`` that name a setting, under the names the source
    looks for (``TALLY_kafka__topic``). Any other ``TALLY_*`` variable is warned about once per
    process (with the setting it may mean) and left out: it must not break a command."""
    known = setting_env_names()
    out: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or _not_a_setting(name):
            continue
        if name.upper() in known:
            section, _, key = known[name.upper()].rpartition(".")
            out[f"{ENV_PREFIX}{section}__{key}" if section else f"{ENV_PREFIX}{key}"] = value
        elif name not in _WARNED:
            _WARNED.add(name)
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]}?" if close else ""
            log.warning("%s: names no setting, ignored%s", name, hint)
    return out


class TallyEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over the given mapping, reading only the variables
    that name a setting (see :func:`_settings_in`); a list of strings is comma-separated."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return _settings_in(self._environ)

    def explode_env_vars(self, field_name: str, field: FieldInfo,
                         env_vars: Mapping[str, str | None]) -> dict[str, Any]:
        values = super().explode_env_vars(field_name, field, env_vars)
        keys = field.annotation.model_fields if isinstance(field.annotation, type) and \
            issubclass(field.annotation, BaseModel) else {}
        for key, value in values.items():
            if key in keys and isinstance(value, str):
                values[key] = _from_string(keys[key], value)
        return values

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        return value if field is not None and _is_list(field) else \
            super().decode_complex_value(field_name, field, value)


def _is_list(field: FieldInfo) -> bool:
    return typing.get_origin(field.annotation) is tuple


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _from_string(field: FieldInfo, value: str) -> Any:
    """An environment variable's value as the field's type: pydantic's reading of strings
    (``6``, ``true``/``yes``/``on``, ``1.5``), a list comma-separated. A value that does not read
    stays a string, for the (strict) validation to reject with the key named."""
    if _is_list(field):
        return [v.strip() for v in value.split(",") if v.strip()]
    try:
        return _adapter(field.annotation).validate_strings(value)
    except ValidationError:
        return value


# Errors -----------------------------------------------------------------------------------------

_TYPE_RULES = {
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer", "float_type": "must be a number",
    "float_parsing": "must be a number", "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean", "string_type": "must be a string",
    "tuple_type": "must be a list of strings", "list_type": "must be a list of strings",
    "model_type": "must be a table of keys", "dict_type": "must be a table of keys",
    "model_attributes_type": "must be a table of keys",
}
_BOUNDS = {"greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}",
           "less_than": "must be below {lt}", "less_than_equal": "must be at most {le}"}


def _field_at(loc: tuple) -> tuple[FieldInfo | None, Any]:
    """The field at a validation error's location, and the annotation of its item when the
    location points into a list."""
    model: Any = TallyConfig
    field = None
    for part in loc:
        if isinstance(part, int):
            args = typing.get_args(field.annotation) if field else ()
            return field, (args[0] if args else None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None, None
        field = model.model_fields.get(part)
        if field is None:
            return None, None
        model = field.annotation
    return field, None


def rule_of(metadata: list) -> Rule:
    """The :class:`Rule` among a field's metadata (an empty one if it has none)."""
    return next((m for m in metadata if isinstance(m, Rule)), Rule())


def _bounds(metadata: list) -> dict[str, Any]:
    out = {}
    for m in metadata:
        for name in ("gt", "ge", "lt", "le"):
            if getattr(m, name, None) is not None:
                out[name] = getattr(m, name)
    return out


def _message(err: dict, env_of: Callable[[str], str | None]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc if isinstance(p, str))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    field, item = _field_at(loc)
    meta = list(field.metadata) if field else []
    item_meta = list(typing.get_args(item)[1:]) if typing.get_origin(item) is Annotated else []
    rule = rule_of(item_meta or meta) if item is not None else rule_of(meta)
    secret = rule.secret or rule_of(meta).secret
    shown = "" if secret else f", got {value!r}"

    if kind == "extra_forbidden":
        parent = loc[:-1]
        owner = TallyConfig if not parent else sections().get(str(parent[0]))
        known = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
        text = f"{key}: unknown config key ({hint})"
    elif kind in ("value_error", "assertion_error") and isinstance(ctx.get("error"), RuleError):
        exc = ctx["error"]
        key = ".".join(p for p in (key, exc.key) if p)
        text = f"{key}: {exc.rule}"
    elif kind in ("value_error", "assertion_error"):
        text = f"{key}: {ctx.get('error')}"
    elif kind in _TYPE_RULES and item is not None:
        text = f"{key}: each item {_TYPE_RULES[kind]}" + ("" if secret else f", got {value!r}")
    elif kind in _TYPE_RULES:
        text = f"{key}: {_TYPE_RULES[kind]}" + (shown if isinstance(value, str) else "")
    elif kind == "literal_error":
        choices = typing.get_args(field.annotation) if field else ()
        text = f"{key}: must be one of {', '.join(map(str, choices))}" + shown
    elif kind == "string_pattern_mismatch":
        words = rule.text or f"must match {ctx.get('pattern')}"
        if item is not None:
            text = f"{key}: {words}" if secret else f"{key}: {value!r} {words}"
        else:
            text = f"{key}: {words}{shown}"
    elif kind in _BOUNDS:
        bounds = _bounds(item_meta if item is not None else meta)
        if rule.text:
            words = rule.text
        elif "ge" in bounds and "le" in bounds:
            words = f"must be between {bounds['ge']} and {bounds['le']}"
        else:
            words = _BOUNDS[kind].format(**{**ctx, **bounds})
        text = f"{key}: {words}" + (f" ({rule.why})" if rule.why else "")
    elif kind in ("too_short", "too_long"):
        text = f"{key}: {rule.text or err['msg'].lower()}"
    else:
        text = f"{key or 'config'}: {err['msg']}"
    var = env_of(key)
    return f"{text} (from {var})" if var else text


def config_error(exc: ValidationError, env_of: Callable[[str], str | None] = lambda k: None
                 ) -> ConfigError:
    """One :class:`ConfigError` for all of a validation's errors, each as ``key: rule``."""
    return ConfigError("; ".join(_message(e, env_of) for e in exc.errors()))


# Building -------------------------------------------------------------------------------------

def _build(init: Mapping[str, Any], *sources: PydanticBaseSettingsSource,
           env_of: Callable[[str], str | None] = lambda k: None) -> TallyConfig:
    token = _SOURCES.set(tuple(sources))
    try:
        return TallyConfig(**init)
    except ValidationError as exc:
        raise config_error(exc, env_of) from None
    finally:
        _SOURCES.reset(token)


def from_dict(data: Mapping[str, Any], env_keys: Mapping[str, bool] | None = None) -> TallyConfig:
    """The config of ``data`` (a file's tables and keys) over the defaults, validated."""
    return _build(dict(data))


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """``cfg`` as the file's tables and keys (lists for lists)."""
    return _lists(cfg.model_dump())


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


REDACTED = "<redacted>"


def secret_keys(cfg: BaseModel) -> set[tuple[str, str]]:
    """(section, key) of every setting whose value is a secret (API keys, S3 credentials)."""
    out = set()
    for section, field in type(cfg).model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key, f in model.model_fields.items():
            if rule_of(f.metadata).secret:
                out.add((section, key))
    return out


def to_toml(cfg: "TallyConfig", redact: bool = False) -> str:
    """The whole config as a TOML file that :func:`load_config` reads back to an equal object;
    with ``redact``, every secret that is set reads ``<redacted>`` (for showing, not loading)."""
    data = to_dict(cfg)
    if redact:
        for section, key in secret_keys(cfg):
            value = data[section][key]
            if value:
                data[section][key] = [REDACTED] * len(value) if isinstance(value, list) else REDACTED
    top, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]\n" + "".join(f"{k} = {_toml_value(v)}\n"
                                                  for k, v in value.items()))
        else:
            top.append(f"{key} = {_toml_value(value)}\n")
    return "".join(top) + "".join(tables)


def _toml_source(path: str | os.PathLike) -> TomlConfigSettingsSource:
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"--config: no such file: {path}")
    try:
        return TomlConfigSettingsSource(TallyConfig, toml_file=Path(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None


def load_config(path: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> TallyConfig:
    """Defaults, then the TOML file (``path`` or ``$TALLY_CONFIG``), then ``TALLY_*``, then
    ``overrides`` (what command-line flags such as ``--state-dir`` set; None: not given)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("TALLY_CONFIG")
    env = TallyEnvSource(TallyConfig, environ)
    by_key = {v: k for k, v in setting_env_names().items()}
    given = {name.upper() for name in environ if name.startswith(ENV_PREFIX)}

    def env_of(key: str) -> str | None:
        var = by_key.get(key)
        return var if var in given else None

    sources: list[PydanticBaseSettingsSource] = [env]
    if path:
        sources.append(_toml_source(path))
    init = {k: v for k, v in (overrides or {}).items() if v is not None}
    return _build(init, *sources, env_of=env_of)

