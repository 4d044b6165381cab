"""The batch layer's transformations, pure DataFrame to DataFrame.

Exact counts: every copy of an ``event_id`` but the one first written to Kafka is removed (copies
share the ``video_id`` key and so a partition, where the lowest offset is the first written; across
partitions the lowest partition number wins, deterministically), then :mod:`schemas.counting`
aggregates per minute exactly as the speed layer does, and the hour and day views are rolled up
from the minute view.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from schemas import counting
from schemas.archive import VIEW_COLUMNS

VIEWS = ("minute", "hour", "day")


def distinct_events(raw: DataFrame, multi_ids: DataFrame | None = None) -> DataFrame:
    """One row per ``event_id``: the copy first written to Kafka, as :func:`counting.counted_events`
    wants it, with ``copies``: how many raw rows it stands for.

    Most ids occur once, so the ids that repeat (``multi_ids``, from :func:`repeated_ids`; computed
    here when not given) are found with a hash aggregation on the id alone, and only their rows
    go through the exact "first copy" aggregation, which carries strings and so sorts. Giving a
    small, already computed ``multi_ids`` lets Spark broadcast it instead of shuffling the input.
    """
    if multi_ids is None:
        multi_ids = repeated_ids(raw)
    joined = raw.join(multi_ids, "event_id", "left")
    singles = joined.where(F.col("copies").isNull()).select(
        "event_id", "video_id", "event_type", F.unix_millis("ts").alias("ts"), "watch_ms",
        F.lit(1).cast("long").alias("copies"))
    first = F.min(F.struct("kafka_partition", "kafka_offset", "video_id", "event_type",
                           F.unix_millis("ts").alias("ts"), "watch_ms")).alias("first")
    repeated = (joined.where(F.col("copies").isNotNull())
                .groupBy("event_id").agg(first, F.first("copies").alias("copies"))
                .select("event_id", "first.video_id", "first.event_type", "first.ts", "first.watch_ms",
                        "copies"))
    return counting.counted_events(singles.unionByName(repeated), keep=("copies",))


def repeated_ids(raw: DataFrame) -> DataFrame:
    """(event_id, copies) of the ids that occur more than once."""
    return (raw.groupBy("event_id").agg(F.count(F.lit(1)).alias("copies"))
            .where(F.col("copies") > 1))


def minute_counts(events: DataFrame) -> DataFrame:
    """The minute view plus ``copies`` (raw rows per bucket): the sum of ``copies`` over all
    buckets must equal the input's raw row count — every row fell in exactly one event and
    bucket — which is how the job verifies its totals against the input."""
    return counting.aggregate(events, "minute", carry=("copies",))


def drop_bookkeeping(counted: DataFrame) -> DataFrame:
    """The minute view from :func:`minute_counts`."""
    return counted.select(*[c.name for c in VIEW_COLUMNS])


def rows_accounted(counted: DataFrame) -> int:
    """The raw rows the buckets of :func:`minute_counts` stand for."""
    return int(counted.agg(F.sum("copies")).first()[0] or 0)


def minute_view(events: DataFrame) -> DataFrame:
    return drop_bookkeeping(minute_counts(events))


def views_from_minutes(minute: DataFrame) -> dict[str, DataFrame]:
    """The minute, hour and day views, in :data:`VIEW_COLUMNS` order, from the minute view."""
    names = [c.name for c in VIEW_COLUMNS]
    return {"minute": minute, **{g: counting.rollup(minute, g).select(*names) for g in ("hour", "day")}}


def views(events: DataFrame) -> dict[str, DataFrame]:
    """The minute, hour and day views of distinct counted events."""
    return views_from_minutes(minute_view(events))


def view_stats(view: DataFrame) -> tuple[int, int, int]:
    """(rows, events, watch_ms) of a view."""
    row = view.agg(F.count(F.lit(1)).alias("r"), F.sum("count").alias("n"),
                   F.sum("watch_ms").alias("w")).first()
    return int(row["r"] or 0), int(row["n"] or 0), int(row["w"] or 0)
