"""The archive and view schemas: derived from the event contract, equal in Spark and Arrow."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.archive import ARCHIVE_COLUMNS, VIEW_COLUMNS, arrow_schema, spark_schema
from schemas.event import FIELD_NAMES


def test_archive_holds_every_contract_field():
    names = [c.name for c in ARCHIVE_COLUMNS]
    assert names[: len(FIELD_NAMES)] == list(FIELD_NAMES)
    assert {"json", "kafka_partition", "kafka_offset", "event_date", "event_hour"} <= set(names)


def test_spark_reads_what_arrow_writes_with_the_same_schema(spark, tmp_path):
    ts = dt.datetime(2026, 11, 27, 10, 15, 0, 123000, tzinfo=dt.timezone.utc)
    row = {"event_id": "e1", "video_id": "v1", "event_type": "view", "ts": ts, "watch_ms": 5,
           "user_id": None, "country": "US", "device": None, "schema_version": 1,
           "json": "{}", "kafka_partition": 3, "kafka_offset": 42, "kafka_timestamp": ts,
           "event_date": ts.date(), "event_hour": 10}
    table = pa.Table.from_pylist([row], schema=arrow_schema(ARCHIVE_COLUMNS))
    pq.write_table(table, tmp_path / "a.parquet")
    df = spark.read.schema(spark_schema(ARCHIVE_COLUMNS)).parquet(str(tmp_path / "a.parquet"))
    got = df.selectExpr("unix_micros(ts) AS ts_us", "unix_micros(kafka_timestamp) AS kts_us",
                        "kafka_offset", "event_date", "watch_ms", "user_id").collect()[0].asDict()
    micros = int(ts.timestamp()) * 1_000_000 + ts.microsecond
    assert got == {"ts_us": micros, "kts_us": micros, "kafka_offset": 42,
                   "event_date": ts.date(), "watch_ms": 5, "user_id": None}
    # And Arrow reads what Spark writes, with the Arrow schema.
    out = tmp_path / "views"
    spark.createDataFrame([("v1", "view", ts, 3, 9)], spark_schema(VIEW_COLUMNS)) \
        .write.parquet(str(out))
    back = pq.read_table(out)
    # Parquet written by Spark marks every column nullable; names and types must agree.
    assert [(f.name, f.type) for f in back.schema] == \
        [(f.name, f.type) for f in arrow_schema(VIEW_COLUMNS)]
    assert back.to_pylist()[0]["bucket_start"] == ts
