"""The one way events are written to Kafka: a small client over kafka-python.

``acks='all'``, idempotence on, batching (``linger_ms``, ``batch_size``), compression, bounded
retries with backoff and timeouts. Events are validated against the contract before they are
sent (:meth:`TallyProducer.send_event`); :meth:`send_raw` writes bytes as they are, for traffic
that is invalid on purpose (tests, the generator's ``--invalid``).

Every send ends in an acknowledgement or a reported error, none silently: failures are collected
by the delivery callbacks and :meth:`flush` / :meth:`close` raise :class:`ProducerError` naming
them. The message key is the ``video_id``, so all events of a video land in one partition.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from adapters import log
from schemas.config import TallyConfig
from schemas.errors import DependencyError, ProducerError
from schemas.event import EventValidator, to_json

LOG = log.get("producer")


class DeliveryTracker:
    """Counts acknowledgements and keeps the failures of the sends in flight.

    Instead of two callbacks per record (which kafka-python's I/O thread would have to run while
    holding the GIL), the futures are kept and reaped: every ``reap_every`` sends and at flush.
    """

    def __init__(self, reap_every: int = 20_000, stuck_after_s: float = 90.0,
                 clock=time.monotonic) -> None:
        self.inflight: list[Any] = []
        self.acked = 0
        self.failed = 0
        self.failures: list[tuple[Any, str]] = []
        self.reap_every = reap_every
        self.stuck_after_s = stuck_after_s
        self.clock = clock
        self._last_reap = clock()
        # Set when a batch expired or a send stayed unacknowledged past the delivery timeout:
        # the client must be rebuilt, see TallyProducer._rebuild_if_expired.
        self.expired = False

    def add(self, future: Any, key: Any) -> None:
        now = self.clock()
        self.inflight.append((future, key, now))
        if len(self.inflight) >= self.reap_every or now - self._last_reap >= 1.0:
            self.reap()

    def on_error(self, key: Any, exc: BaseException) -> None:
        from kafka.errors import KafkaTimeoutError

        if isinstance(exc, KafkaTimeoutError):
            self.expired = True
        self.failed += 1
        if len(self.failures) < 100:
            self.failures.append((key, f"{type(exc).__name__}: {exc}"))

    def reap(self) -> None:
        """Account for every completed send; keep the rest."""
        pending = []
        for item in self.inflight:
            fut, key, _sent = item
            if not fut.is_done:
                pending.append(item)
            elif fut.exception is None:
                self.acked += 1
            else:
                self.on_error(key, fut.exception)
        self.inflight = pending
        self._last_reap = now = self.clock()
        # kafka-python 3.0 can leave batches pending forever after a broker outage longer than
        # the delivery timeout (they neither expire nor get sent): treat that as expired too.
        if pending and now - pending[0][2] > self.stuck_after_s:
            self.expired = True

    def abandon(self, reason: str) -> None:
        """Account for everything in flight now: completed sends as usual, the rest as failed."""
        self.reap()
        for _fut, key, _sent in self.inflight:
            self.failed += 1
            if len(self.failures) < 100:
                self.failures.append((key, reason))
        self.inflight = []

    def take_failures(self) -> tuple[int, list[tuple[Any, str]]]:
        n, failures = self.failed, self.failures
        self.failed, self.failures = 0, []
        return n, failures


def _partitioner_base():
    from kafka.partitioner import Partitioner

    return Partitioner


class KeyHashPartitioner(_partitioner_base()):  # type: ignore[misc]
    """kafka-python's default partitioning (murmur2 of the key, as the Java client does), with
    the hash of each key remembered: a few thousand hot videos are hashed once, not per event."""

    def __init__(self, max_keys: int = 200_000):
        from kafka.partitioner.default import murmur2

        self._murmur2 = murmur2
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        ordered = sorted(partitions)
        if serialized_key is None:
            import random

            available = list(cluster.available_partitions_for_topic(topic))
            return random.choice(available or ordered)
        h = self._hashes.get(serialized_key)
        if h is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            h = self._hashes[serialized_key] = self._murmur2(serialized_key) & 0x7FFFFFFF
        return ordered[h % len(ordered)]


def producer_settings(cfg: TallyConfig, **overrides: Any) -> dict[str, Any]:
    """kafka-python settings of the Tally producer (also used by bench/ingest.py's reference)."""
    k = cfg.kafka
    settings: dict[str, Any] = dict(
        bootstrap_servers=k.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=k.linger_ms,
        batch_size=k.batch_size,
        compression_type=None if k.compression == "none" else k.compression,
        retries=5,
        retry_backoff_ms=200,
        request_timeout_ms=k.request_timeout_ms,
        delivery_timeout_ms=k.delivery_timeout_ms,
        max_block_ms=k.request_timeout_ms,
        max_request_size=k.max_message_bytes,
        max_in_flight_requests_per_connection=5,
        client_id="tally-producer",
    )
    settings.update(overrides)
    # Connecting waits no longer than a send may block (kafka-python's own default is 30 s).
    settings.setdefault("bootstrap_timeout_ms", settings["max_block_ms"])
    return settings


class TallyProducer:
    """Validating, acknowledging producer of contract events."""

    def __init__(self, cfg: TallyConfig, topic: str | None = None,
                 validator: EventValidator | None = None, **overrides: Any):
        self.topic = topic or cfg.kafka.topic
        self.validator = validator or EventValidator.from_config(cfg)
        self.tracker = DeliveryTracker(stuck_after_s=cfg.kafka.delivery_timeout_ms / 1000 + 30)
        self.sent = 0
        self.rebuilds = 0
        self._settings = producer_settings(cfg, **{"partitioner": KeyHashPartitioner(), **overrides})
        self._producer = self._connect()

    def _connect(self):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            return KafkaProducer(**self._settings)
        except KafkaError as exc:
            raise DependencyError("kafka", f"cannot connect to {self._settings['bootstrap_servers']}: "
                                           f"{type(exc).__name__}: {exc}") from exc

    def _rebuild_if_expired(self) -> None:
        """Replace the Kafka client once it stopped delivering: a batch expired (an outage longer
        than ``delivery_timeout_ms``), or sends stayed pending past it — kafka-python's
        idempotent producer can stay stuck after such an outage even once the broker is back.
        What the old client still held is reported as not acknowledged (never silently lost);
        the new client (a new producer id) takes the next sends. Raises a retriable
        ProducerError while Kafka cannot be reached yet."""
        if not self.tracker.expired:
            return
        if self._producer is not None:
            old, self._producer = self._producer, None
            try:
                old.close(timeout=0)
            except Exception as exc:  # noqa: BLE001 - the old client is being dropped anyway
                LOG.debug("closing the stuck producer: %s", exc)
            self.tracker.abandon("not acknowledged: the Kafka client stopped delivering and was replaced")
        try:
            self._producer = self._connect()
        except DependencyError as exc:
            raise ProducerError(f"kafka: replacing a client that stopped delivering: {exc}",
                                retriable=True) from exc
        self.tracker.expired = False
        self.rebuilds += 1
        LOG.warning("producer: the Kafka client stopped delivering (an outage longer than "
                    "kafka.delivery_timeout_ms) and was replaced; what it held is reported as "
                    "not acknowledged")

    def send_event(self, event: Mapping[str, Any], clock_ms: int | None = None):
        """Validate ``event`` (raises ValidationError) and send it keyed by its video_id."""
        clock = int(time.time() * 1000) if clock_ms is None else clock_ms
        self.validator.validate(event, clock)
        return self.send_raw(to_json(event), event["video_id"].encode("ascii"))

    def send_raw(self, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None):
        """Send bytes as they are. The returned future resolves when Kafka acknowledges."""
        from kafka.errors import KafkaError

        self._rebuild_if_expired()
        try:
            fut = self._producer.send(self.topic, value=value, key=key, timestamp_ms=timestamp_ms)
        except KafkaError as exc:
            self.tracker.on_error(key, exc)
            raise ProducerError(f"kafka: send failed: {type(exc).__name__}: {exc}",
                                [(key, str(exc))], retriable=getattr(exc, "retriable", False)) from exc
        self.sent += 1
        self.tracker.add(fut, key)
        return fut

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for every send so far; return the acknowledged count or raise ProducerError."""
        from kafka.errors import KafkaError

        try:
            if self._producer is not None:  # None: being replaced, see _rebuild_if_expired
                self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            self.tracker.reap()
            self.tracker.expired = True  # a flush that timed out: start the next sends afresh
            raise ProducerError(f"kafka: flush did not complete: {type(exc).__name__}: {exc}; "
                                f"{len(self.tracker.inflight)} event(s) not acknowledged yet",
                                retriable=True) from exc
        self.tracker.reap()
        failed, failures = self.tracker.take_failures()
        if failed:
            first = failures[0][1] if failures else "unknown error"
            raise ProducerError(f"kafka: {failed} event(s) not acknowledged (first: {first})",
                                failures, retriable=True)
        return self.tracker.acked

    def close(self, timeout_s: float | None = None) -> int:
        """Flush, then close; raises ProducerError if anything was not acknowledged."""
        try:
            return self.flush(timeout_s)
        finally:
            try:
                if self._producer is not None:
                    self._producer.close(timeout=timeout_s if timeout_s is not None else 5)
            except Exception as exc:  # noqa: BLE001 - closing must not hide the flush result
                LOG.warning("producer close: %s", exc)

    def __enter__(self) -> "TallyProducer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close(timeout_s=5)
            except ProducerError as err:
                LOG.error("producer close after an error: %s", err)
