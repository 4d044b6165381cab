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


def distinct_events(raw: DataFrame) -> DataFrame:
    """One row per ``event_id``: the copy first written to Kafka, as :func:`counting.counted_events`
    wants it (``ts`` in epoch ms)."""
    first = F.min(F.struct("kafka_partition", "kafka_offset", "video_id", "event_type",
                           F.unix_millis("ts").alias("ts"), "watch_ms")).alias("first")
    return counting.counted_events(raw.groupBy("event_id").agg(first).select("event_id", "first.*"))


def minute_view(events: DataFrame) -> DataFrame:
    return counting.aggregate(events, "minute").select(*[c.name for c in VIEW_COLUMNS])


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
