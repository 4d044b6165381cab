"""The speed layer's pure transformations on a local SparkSession, and the streaming chain
(dedup within watermark -> windowed count, update mode) on the pinned Spark version."""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import functions as F

from schemas.archive import ARCHIVE_COLUMNS, spark_schema
from schemas.config import load_config
from speed_layer import transform

CFG = load_config(environ={})
T0 = 1_794_910_500_000  # 2026-11-17T10:15:00Z
CLOCK = dt.datetime(2026, 11, 18, tzinfo=dt.timezone.utc)


def kafka_df(spark, values: list[bytes]):
    rows = [(b"k", bytearray(v), "tally.events", i % 3, 100 + i, CLOCK) for i, v in enumerate(values)]
    return spark.createDataFrame(
        rows, "key binary, value binary, topic string, partition int, offset long, timestamp timestamp")


def ev(eid: str, ts: int, video: str = "v1", etype: str = "view", watch: int | None = 10) -> bytes:
    e = {"event_id": eid, "video_id": video, "event_type": etype, "ts": ts}
    if watch is not None:
        e["watch_ms"] = watch
    return json.dumps(e).encode()


def test_dead_letters_keep_the_record_and_say_why(spark):
    bad = b'{"event_id": "x", "video_id": "v", "event_type": "nope", "ts": 1}'
    parsed = transform.parse(kafka_df(spark, [ev("a", T0), bad, b"\xff"]), CFG)
    rows = transform.dead_letters(parsed).collect()
    assert [bytes(r["value"]) for r in rows] == [bad, b"\xff"]
    headers = [{h["key"]: bytes(h["value"]).decode() for h in r["headers"]} for r in rows]
    assert headers[0] == {"tally.error": "event_type: must be one of view, like, dislike, share, comment",
                          "tally.source": "tally.events/1/101"}
    assert headers[1]["tally.error"] == "event: not valid UTF-8"
    assert transform.valid(parsed).count() == 1


def test_archive_rows_carry_everything(spark):
    late_night = T0 + 13 * 3_600_000 + 44 * 60_000 + 59_999  # 2026-11-17T23:59:59.999Z
    parsed = transform.parse(kafka_df(spark, [ev("a", late_night, watch=None)]), CFG)
    df = transform.archive_rows(transform.valid(parsed))
    assert df.columns == [c.name for c in ARCHIVE_COLUMNS]
    # The declared types, so that the stream's files are what the batch layer reads.
    assert [f.dataType for f in df.schema.fields] == [f.dataType for f in spark_schema(ARCHIVE_COLUMNS).fields]
    r = df.selectExpr("*", "unix_millis(ts) AS ts_ms").collect()[0]
    assert r["ts_ms"] == late_night
    assert (r["event_date"], r["event_hour"]) == (dt.date(2026, 11, 17), 23)
    assert r["watch_ms"] is None and r["schema_version"] == 1
    assert json.loads(r["json"])["event_id"] == "a"
    assert (r["kafka_partition"], r["kafka_offset"]) == (0, 100)


def test_counting_definition_in_batch(spark):
    """The shared definition (what both layers count) on distinct events."""
    from schemas.counting import aggregate, counted_events

    values = [ev("a", T0), ev("b", T0 + 59_999, watch=None), ev("c", T0 + 60_000),
              ev("d", T0, etype="like"), ev("e", T0, video="v2", watch=7)]
    events = counted_events(transform.valid(transform.parse(kafka_df(spark, values), CFG)))
    got = {}
    for g in ("minute", "hour", "day"):
        for r in aggregate(events, g).select("*", F.unix_millis("bucket_start").alias("ms")).collect():
            got[(g, r["video_id"], r["event_type"], r["ms"])] = (r["count"], r["watch_ms"])
    day = T0 - (T0 % 86_400_000)
    hour = T0 - (T0 % 3_600_000)
    assert got == {
        ("minute", "v1", "view", T0): (2, 10), ("minute", "v1", "view", T0 + 60_000): (1, 10),
        ("minute", "v1", "like", T0): (1, 10), ("minute", "v2", "view", T0): (1, 7),
        ("hour", "v1", "view", hour): (3, 20), ("hour", "v1", "like", hour): (1, 10),
        ("hour", "v2", "view", hour): (1, 7),
        ("day", "v1", "view", day): (3, 20), ("day", "v1", "like", day): (1, 10),
        ("day", "v2", "view", day): (1, 7),
    }


def test_streaming_chain_in_update_mode(spark, tmp_path):
    """dropDuplicatesWithinWatermark chained with a windowed count, update mode: retries inside
    the watermark are not counted twice; events behind it are dropped and counted as dropped."""
    src = tmp_path / "in"
    src.mkdir()
    schema = "value binary, timestamp timestamp"
    stream = (spark.readStream.schema("value string, timestamp timestamp").json(str(src))
              .select(F.col("value").cast("binary").alias("value"), "timestamp",
                      F.lit(b"k").alias("key"), F.lit("t").alias("topic"), F.lit(0).alias("partition"),
                      F.lit(0).cast("long").alias("offset")))
    counts = transform.minute_counts(transform.valid(transform.parse(stream, CFG)), "1 minute")
    query = (counts.writeStream.format("memory").queryName("chain").outputMode("update")
             .option("checkpointLocation", str(tmp_path / "ck")).start())
    assert schema

    def send(n: int, *events: bytes) -> None:
        with open(src / f"{n}.json", "w") as fh:
            for e in events:
                fh.write(json.dumps({"value": e.decode(), "timestamp": "2026-11-18T00:00:00Z"}) + "\n")
        query.processAllAvailable()

    def latest() -> dict:
        rows = spark.sql("SELECT *, unix_millis(bucket_start) AS ms FROM chain").collect()
        return {r["ms"]: r["count"] for r in rows}  # update mode: later rows win

    try:
        send(0, ev("a", T0), ev("a", T0 + 1), ev("b", T0 + 2))
        assert latest()[T0] == 2
        send(1, ev("a", T0 + 3), ev("c", T0 + 10 * 60_000))  # a retry, and time moves on
        assert latest()[T0] == 2
        send(2, ev("d", T0 + 20 * 60_000))  # the watermark passes T0's minute
        send(3, ev("late", T0 + 5))  # behind the watermark: dropped
        assert latest()[T0] == 2
        dropped = sum(op.numRowsDroppedByWatermark for p in query.recentProgress for op in p.stateOperators)
        assert dropped == 1
    finally:
        query.stop()
