"""Schemas of the data Tally stores as Parquet, each defined once as a list of columns and derived
into a Spark ``StructType`` and an Arrow schema (a test proves the two agree on disk).

* :data:`ARCHIVE_COLUMNS`: the raw archive, the master dataset. The contract's fields (from
  :data:`schemas.event.FIELDS`), the original JSON, where the record was in Kafka, and the
  event-time partition columns.
* :data:`VIEW_COLUMNS`: a batch view, one row per (video, event type, bucket) at one granularity
  (the day view is also what top-K reads: per-video day totals per event type).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.event import FIELDS


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | int32 | int64 | timestamp | date
    nullable: bool = True


def _field_type(f) -> str:
    if f.kind == "timestamp":
        return "timestamp"
    if f.kind == "integer":
        return "int32" if f.maximum is not None and f.maximum <= 2**31 - 1 else "int64"
    return "string"


ARCHIVE_COLUMNS: tuple[Column, ...] = tuple(
    Column(f.name, _field_type(f), nullable=not (f.required or f.default is not None)) for f in FIELDS
) + (
    Column("json", "string", False),             # the record exactly as it was sent
    Column("kafka_partition", "int32", False),
    Column("kafka_offset", "int64", False),
    Column("kafka_timestamp", "timestamp", False),
    Column("event_date", "date", False),          # partition column: UTC day of ts
    Column("event_hour", "int32", False),         # partition column: UTC hour of ts
)
ARCHIVE_PARTITION_COLUMNS = ("event_date", "event_hour")
ARCHIVE_KEY = "raw/events"  # the archive's place in the lake (the streaming job's file sink)
IMPORTS_KEY = "raw/imports"  # one file sink per `tally archive import`, read along with it
COMPACTED_KEY = "raw/compacted"  # `tally archive compact`: a closed day's files rewritten

VIEW_COLUMNS: tuple[Column, ...] = (
    Column("video_id", "string", False),
    Column("event_type", "string", False),
    Column("bucket_start", "timestamp", False),
    Column("count", "int64", False),
    Column("watch_ms", "int64", False),
)


def spark_schema(columns: tuple[Column, ...]):
    from pyspark.sql import types as T

    kinds = {"string": T.StringType(), "int32": T.IntegerType(), "int64": T.LongType(),
             "timestamp": T.TimestampType(), "date": T.DateType()}
    return T.StructType([T.StructField(c.name, kinds[c.type], c.nullable) for c in columns])


def arrow_schema(columns: tuple[Column, ...]):
    import pyarrow as pa

    # Spark writes timestamps as microseconds in UTC; Arrow reads and writes them the same way.
    kinds = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
             "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32()}
    return pa.schema([pa.field(c.name, kinds[c.type], c.nullable) for c in columns])
