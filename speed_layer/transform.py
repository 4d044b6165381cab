"""Pure DataFrame functions of the speed layer: Kafka records in, dead letters, archive rows and
per-minute counts out. No I/O here; :mod:`speed_layer.app` wires them to sources and sinks."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from schemas.archive import ARCHIVE_COLUMNS, spark_schema
from schemas.config import TallyConfig
from schemas.counting import aggregate, counted_events
from schemas.event_spark import validate_events

KAFKA_COLUMNS = ("key", "value", "topic", "partition", "offset", "timestamp")


def parse(records: DataFrame, cfg: TallyConfig) -> DataFrame:
    """Kafka records with the contract's columns and ``error`` (NULL when valid) added. The
    receiving clock is the record's Kafka timestamp, so a replay decides the same way."""
    return validate_events(records.select(*KAFKA_COLUMNS), "value", "timestamp",
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


def minute_counts(valid_events: DataFrame, watermark: str) -> DataFrame:
    """Per (video, event type, UTC minute) ``count`` and ``watch_ms`` of distinct events.

    Copies of an ``event_id`` are dropped within the watermark before aggregating; events older
    than the watermark are dropped (and counted by Spark as rows dropped by the watermark)."""
    events = (counted_events(valid_events)
              .withWatermark("event_time", watermark)
              .dropDuplicatesWithinWatermark(["event_id"]))
    return aggregate(events, "minute")
