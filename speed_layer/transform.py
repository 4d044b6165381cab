"""Pure DataFrame functions of the speed layer: Kafka records in, dead letters, archive rows and
per-minute counts out. No I/O here; :mod:`speed_layer.app` wires them to sources and sinks."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.archive import ARCHIVE_COLUMNS, spark_schema
from schemas.config import TallyConfig
from schemas.counting import aggregate, counted_events
from schemas.durations import parse_duration_ms
from schemas.event_jvm import validate_events_jvm

KAFKA_COLUMNS = ("key", "value", "topic", "partition", "offset", "timestamp")


def parse(records: DataFrame, cfg: TallyConfig) -> DataFrame:
    """Kafka records with the contract's columns and ``error`` (NULL when valid) added, by the
    JVM validator (one call per record). The receiving clock is the record's Kafka timestamp,
    so a replay decides the same way."""
    return validate_events_jvm(records.select(*KAFKA_COLUMNS), "value", "timestamp",
                               cfg.events.types, cfg.events.max_future_ms)


def valid(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("error").isNull())


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Invalid records for the dead-letter topic: key and value unchanged, the reason in header
    ``tally.error`` and where it came from (``topic/partition/offset``) in ``tally.source``."""
    source = F.concat_ws("/", "topic", F.col("partition").cast("string"), F.col("offset").cast("string"))
    headers = F.array(
        F.struct(F.lit("tally.error").alias("key"), F.col("error").cast("binary").alias("value")),
        F.struct(F.lit("tally.source").alias("key"), source.cast("binary").alias("value")),
    )
    return parsed.where(F.col("error").isNotNull()).select("key", "value", headers.alias("headers"))


def archive_rows(valid_events: DataFrame) -> DataFrame:
    """Rows of the raw archive: parsed fields, the original JSON, the Kafka position, and the
    event-time partition columns (UTC day and hour)."""
    t = F.timestamp_millis(F.col("ts"))
    cols = {
        "ts": t,
        "watch_ms": F.col("watch_ms"),
        "schema_version": F.col("schema_version").cast("int"),
        "kafka_partition": F.col("partition"),
        "kafka_offset": F.col("offset"),
        "kafka_timestamp": F.col("timestamp"),
        "event_date": F.to_date(t),
        "event_hour": F.hour(t),
    }
    # Cast to the declared types, so that what the stream writes is what every reader expects.
    types = {f.name: f.dataType for f in spark_schema(ARCHIVE_COLUMNS).fields}
    return valid_events.select(*[
        (cols[c.name] if c.name in cols else F.col(c.name)).cast(types[c.name]).alias(c.name)
        for c in ARCHIVE_COLUMNS])


# The observed metrics of the speed query (in each progress event's observedMetrics).
TIME_METRICS = "tally_time"
# Per micro-batch, events ahead of the clock are counted per UTC day exactly as long as they fall
# on at most this many distinct days (histogram_numeric keeps one bin per value up to its limit).
AHEAD_DAYS_MAX = 1024
# Late-candidate slack for clock skew between the partitions' brokers and for partitions read
# behind the others (see minute_counts).
LATE_MARGIN_MS = 60_000


def ahead_of_clock(ts_ms: Column, received_ms: Column, tolerance_ms: int) -> Column:
    """Stamped more than the tolerance after the receiving clock (the broker's append time)."""
    return ts_ms > received_ms + F.lit(tolerance_ms)


def minute_counts(valid_events: DataFrame, watermark: str, ahead_tolerance_ms: int = 120_000
                  ) -> DataFrame:
    """Per (video, event type, UTC minute) ``count`` and ``watch_ms`` of distinct events.

    Events stamped more than ``ahead_tolerance_ms`` after their receiving clock are left out, so
    no event moves the watermark past the receiving clock (the batch counts them). Copies of an
    ``event_id`` are dropped within the watermark before aggregating; events older than the
    watermark are dropped (counted by Spark as rows dropped by the watermark).

    Observed per micro-batch (``TIME_METRICS``): ``ahead``, a histogram of the UTC days (since
    the epoch) of the events left out as ahead of the clock; ``late``, the event times of the
    events that may be dropped as late — those that arrived more than the watermark delay minus
    the tolerance (and a margin) after their event time, a superset of the late ones, since the
    watermark never passes the receiving clock plus the tolerance. The progress listener counts
    the late ones per day from it against the watermark the batch filtered with."""
    events = counted_events(valid_events, keep=("timestamp",))
    ts_ms = F.unix_millis("event_time")
    received = F.unix_millis("timestamp")
    ahead = ahead_of_clock(ts_ms, received, ahead_tolerance_ms)
    delay = parse_duration_ms(watermark, "stream.watermark")
    candidate = ~ahead & (ts_ms <= received + F.lit(ahead_tolerance_ms - delay + LATE_MARGIN_MS))
    observed = events.observe(
        TIME_METRICS,
        F.histogram_numeric(F.when(ahead, F.unix_date(F.to_date("event_time"))),
                            F.lit(AHEAD_DAYS_MAX)).alias("ahead"),
        F.collect_list(F.when(candidate, ts_ms)).alias("late"))
    on_clock = (observed.where(~ahead).drop("timestamp")
                .withWatermark("event_time", watermark)
                .dropDuplicatesWithinWatermark(["event_id"]))
    return aggregate(on_clock, "minute")
