"""The batch layer's transformations, pure DataFrame to DataFrame.

Exact counts: every copy of an ``event_id`` but one is removed. Within a UTC day the copy first
written to Kafka counts (copies share the ``video_id`` key and so a partition, where the lowest
offset is the first written; across partitions the lowest partition number wins,
deterministically). Copies on different days (a retry re-stamped across midnight) are one event
too: a day's copy is dropped when the same ``event_id`` has a copy on one of the ``span`` days
before it. Then :mod:`schemas.counting` aggregates per minute exactly as the speed layer does,
and the hour and day views are rolled up from the minute view.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas import counting
from schemas.archive import VIEW_COLUMNS


def with_day(raw: DataFrame) -> DataFrame:
    """``raw`` with ``day``: days since the epoch of the UTC day of ``ts``."""
    return raw.withColumn("day", F.unix_date(F.to_date("ts")))


def distinct_events_by_day(raw: DataFrame, days: list[int], span: int,
                           multi_hashes: DataFrame | None = None,
                           repeated: DataFrame | None = None) -> DataFrame:
    """One row per (UTC day in ``days``, ``event_id``) that counts, as
    :func:`counting.counted_events` wants it, with ``copies`` (the raw rows of that day it stands
    for) and ``dropped`` (1 on the rows of an id whose day's copies are dropped because it has a
    copy on one of the ``span`` days before; those rows are not counted, only accounted for).

    ``raw`` holds the archive rows of ``days`` and of the ``span`` days before each, with
    ``day`` (:func:`with_day`).

    Most ids occur once. The rows whose id may repeat are found by a 64-bit hash of the id
    (``multi_hashes``, from :func:`repeated_hashes`; computed here when not given): aggregating
    longs shuffles a fraction of what the id strings would. Only those rows go through the exact
    "first copy" aggregation on the id itself, grouped by id and day, which carries strings and
    so sorts (:func:`repeated_events_by_day`; pass it as ``repeated`` to reuse a computed one); a
    hash collision merely sends two distinct ids down that exact path. Giving a small, already
    computed ``multi_hashes`` lets Spark broadcast it instead of shuffling the input."""
    if multi_hashes is None:
        multi_hashes = repeated_hashes(raw)
    if repeated is None:
        repeated = repeated_events_by_day(raw, days, span, multi_hashes)
    singles = (_mark_repeated(raw, multi_hashes)
               .where(F.col("_multi").isNull() & F.col("day").isin(days)).select(
                   "day", "event_id", "video_id", "event_type", F.unix_millis("ts").alias("ts"),
                   "watch_ms", F.lit(1).cast("long").alias("copies"), F.lit(0).alias("dropped")))
    return counting.counted_events(singles.unionByName(repeated), keep=("copies", "dropped", "day"))


def repeated_events_by_day(raw: DataFrame, days: list[int], span: int,
                           multi_hashes: DataFrame) -> DataFrame:
    """The rows of :func:`distinct_events_by_day` whose id hash repeats (a small part of the
    input), before the counting columns: the first copy of each (id, day) by Kafka position,
    ``copies`` and ``dropped``."""
    from pyspark.sql import Window

    first = F.min(F.struct("kafka_partition", "kafka_offset", "video_id", "event_type",
                           F.unix_millis("ts").alias("ts"), "watch_ms")).alias("first")
    per_day = (_mark_repeated(raw, multi_hashes).where(F.col("_multi").isNotNull())
               .groupBy("event_id", "day").agg(first, F.count(F.lit(1)).alias("copies")))
    earlier = F.lag("day").over(Window.partitionBy("event_id").orderBy("day"))
    return (per_day.withColumn("_prev", earlier)
            .where(F.col("day").isin(days))
            .select("day", "event_id", "first.video_id", "first.event_type", "first.ts",
                    "first.watch_ms", "copies",
                    F.when(F.col("_prev").isNotNull() & (F.col("day") - F.col("_prev") <= span), 1)
                    .otherwise(0).alias("dropped")))


def _mark_repeated(raw: DataFrame, multi_hashes: DataFrame) -> DataFrame:
    return (raw.withColumn("_h", id_hash())
            .join(multi_hashes.select("_h", F.lit(True).alias("_multi")), "_h", "left"))


def id_hash() -> Column:
    """A 64-bit hash of ``event_id`` (equal ids, equal hashes; rarely, different ids too)."""
    return F.xxhash64("event_id")


def repeated_hashes(raw: DataFrame) -> DataFrame:
    """(``_h``, ``copies``) of the id hashes that occur more than once: every repeated id's hash
    is among them."""
    return (raw.groupBy(id_hash().alias("_h")).agg(F.count(F.lit(1)).alias("copies"))
            .where(F.col("copies") > 1))


def minute_counts(events: DataFrame) -> DataFrame:
    """The minute view plus ``copies`` (raw rows per bucket): the sum of ``copies`` over all
    buckets must equal the input's raw row count — every row fell in exactly one event and
    bucket — which is how the job verifies its totals against the input."""
    return counting.aggregate(events, "minute", carry=("copies",))


def counted_minutes(events: DataFrame) -> DataFrame:
    """:func:`minute_counts` of the rows of :func:`distinct_events_by_day` that count."""
    return minute_counts(events.where(F.col("dropped") == 0).drop("dropped", "day"))


def drop_bookkeeping(counted: DataFrame) -> DataFrame:
    """The minute view from :func:`minute_counts`."""
    return counted.select(*[c.name for c in VIEW_COLUMNS])


def bucket_date() -> Column:
    """The UTC day of ``bucket_start`` as ``YYYY-MM-DD``: a view's ``date`` partition."""
    return F.to_date("bucket_start").cast("string")


def stats_by_day(view: DataFrame, *sums: str, date: Column | None = None) -> dict[str, tuple[int, ...]]:
    """(rows, events, watch_ms, then the sum of each of ``sums``) of a view per day (``date``,
    default :func:`bucket_date`)."""
    extra = [F.sum(c).alias(f"_s{i}") for i, c in enumerate(sums)]
    rows = view.groupBy((bucket_date() if date is None else date).alias("_d")).agg(
        F.count(F.lit(1)).alias("_r"), F.sum("count").alias("_n"), F.sum("watch_ms").alias("_w"),
        *extra).collect()
    return {r["_d"]: (int(r["_r"]), int(r["_n"] or 0), int(r["_w"] or 0),
                      *(int(r[f"_s{i}"] or 0) for i in range(len(sums)))) for r in rows}


def views_from_minutes(minute: DataFrame) -> dict[str, DataFrame]:
    """The minute, hour and day views, in :data:`VIEW_COLUMNS` order, from the minute view (the
    day view rolled up from the hour view: persisting that one serves both)."""
    names = [c.name for c in VIEW_COLUMNS]
    hour = counting.rollup(minute, "hour").select(*names)
    return {"minute": minute, "hour": hour, "day": counting.rollup(hour, "day").select(*names)}
