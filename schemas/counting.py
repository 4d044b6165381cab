"""What is counted (CONTRACTS.md section 2), defined once for the speed and the batch layer.

Both layers turn valid events into :func:`counted_events` (one row per event with its event
time and ``watch_ms``, absent counted as 0), remove copies of an ``event_id`` (the speed layer
within its watermark, the batch layer exactly, keeping the copy first written to Kafka), and
aggregate with :func:`aggregate` over UTC buckets made by :func:`bucket` — the same column
expressions in both, so the two cannot drift apart.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.granularity import GRANULARITIES

# Spark window lengths of the contract's granularities.
WINDOWS = {g: f"1 {g}" for g in GRANULARITIES}
KEYS = ("video_id", "event_type")


def event_time(ts_ms: Column) -> Column:
    """The event time as a Spark timestamp (UTC) from epoch milliseconds."""
    return F.timestamp_millis(ts_ms)


def counted_events(valid: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """The columns counting needs, from validated events (``ts`` in epoch ms), plus ``keep``."""
    return valid.select(
        "event_id", "video_id", "event_type",
        event_time(F.col("ts")).alias("event_time"),
        F.coalesce(F.col("watch_ms"), F.lit(0)).cast("long").alias("watch_ms"),
        *keep,
    )


def bucket(granularity: str, time_col: str = "event_time") -> Column:
    """The UTC bucket an event falls in, as a tumbling window (what Spark's watermark needs to
    evict state in a streaming aggregation; in batch it is just the bucket)."""
    return F.window(time_col, WINDOWS[granularity])


def aggregate(events: DataFrame, granularity: str = "minute", carry: tuple[str, ...] = ()) -> DataFrame:
    """``count`` and ``watch_ms`` per (video, event type, bucket) of distinct events (plus the
    sums of the ``carry`` columns, for bookkeeping that is not part of the counts)."""
    return (events.groupBy(*KEYS, bucket(granularity).alias("bucket"))
            .agg(F.count(F.lit(1)).alias("count"), F.sum("watch_ms").cast("long").alias("watch_ms"),
                 *[F.sum(c).cast("long").alias(c) for c in carry])
            .select(*KEYS, F.col("bucket.start").alias("bucket_start"), "count", "watch_ms", *carry))


def rollup(view: DataFrame, granularity: str) -> DataFrame:
    """A coarser view from a finer one: the sums of its buckets (counts of distinct events add up,
    since an event lies in exactly one bucket)."""
    return (view.groupBy(*KEYS, F.date_trunc(granularity, "bucket_start").alias("bucket_start"))
            .agg(F.sum("count").cast("long").alias("count"), F.sum("watch_ms").cast("long").alias("watch_ms")))
