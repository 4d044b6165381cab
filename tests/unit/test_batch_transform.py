"""The batch layer's pure transformations on a local SparkSession."""

from __future__ import annotations

import datetime as dt

from batch_layer import transform
from schemas.archive import VIEW_COLUMNS

UTC = dt.timezone.utc


def raw_df(spark, rows):
    """(event_id, video, type, ts datetime, watch, partition, offset) -> archive-like rows."""
    return spark.createDataFrame(rows, "event_id string, video_id string, event_type string, "
                                       "ts timestamp, watch_ms int, kafka_partition int, kafka_offset long")


def at(h, m=0, s=0, ms=0, day=20):
    return dt.datetime(2026, 11, day, h, m, s, ms * 1000, tzinfo=UTC)


def day_number(day: int) -> int:
    return (dt.date(2026, 11, day) - dt.date(1970, 1, 1)).days


def distinct(df, multi=None, days=(20, 21), span=1):
    """What the job computes for ``days`` (the rows of other days only dedup against)."""
    return transform.distinct_events_by_day(transform.with_day(df), [day_number(d) for d in days],
                                            span, multi)


def views_of(events):
    return transform.views_from_minutes(transform.drop_bookkeeping(transform.counted_minutes(events)))


def test_the_first_written_copy_counts(spark):
    df = raw_df(spark, [
        ("a", "v1", "view", at(10, 1), 500, 2, 7),   # a retry, written later
        ("a", "v1", "view", at(10, 1), 100, 2, 3),   # the first written copy
        ("b", "v1", "view", at(10, 1), None, 0, 9),
        ("b", "v1", "view", at(10, 1), None, 0, 10),
    ])
    rows = {r["event_id"]: r for r in distinct(df).collect()}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["watch_ms"] == 100 and rows["b"]["watch_ms"] == 0  # absent counts as 0
    assert rows["a"]["copies"] == 2 and rows["b"]["copies"] == 2


def test_ids_sent_down_the_exact_path_by_a_hash_collision_stay_distinct(spark):
    """A hash collision puts ids that occur once among the "repeated" hashes; the exact path
    groups by the id itself, so each still counts once with its own values."""
    from pyspark.sql import functions as F

    df = raw_df(spark, [
        ("c", "v1", "view", at(10, 1), 7, 0, 1),
        ("d", "v2", "like", at(11, 2), None, 1, 4),
        ("e", "v2", "view", at(11, 3), 3, 1, 5),
        ("e", "v2", "view", at(11, 3), 9, 1, 8),
    ])
    # What a collision of "c" and "d" with a repeated id would look like to the scan.
    colliding = (df.where(F.col("event_id").isin("c", "d", "e"))
                 .select(transform.id_hash().alias("_h")).distinct())
    rows = {r["event_id"]: r for r in distinct(df, colliding).collect()}
    assert {k: (r["video_id"], r["event_type"], r["watch_ms"], r["copies"]) for k, r in rows.items()} == {
        "c": ("v1", "view", 7, 1), "d": ("v2", "like", 0, 1), "e": ("v2", "view", 3, 2)}
    assert rows == {r["event_id"]: r for r in distinct(df).collect()}


def test_views_at_each_granularity_with_boundaries(spark):
    df = raw_df(spark, [
        ("a", "v1", "view", at(0, 0, 0, 0), 1, 0, 1),
        ("b", "v1", "view", at(0, 0, 59, 999), 2, 0, 2),
        ("c", "v1", "view", at(0, 1, 0, 0), 4, 0, 3),
        ("d", "v1", "view", at(23, 59, 59, 999), 8, 0, 4),
        ("e", "v1", "like", at(23, 59, 59, 999), None, 0, 5),
        ("d", "v1", "view", at(23, 59, 59, 999), 8, 0, 6),  # retry
        ("f", "v2", "view", at(0, 0, 0, 0, day=21), 16, 1, 1),
    ])
    views = views_of(distinct(df))
    names = [c.name for c in VIEW_COLUMNS]
    got = {g: {(r["video_id"], r["event_type"], r["bucket_start"].astimezone(UTC)): (r["count"], r["watch_ms"])
               for r in v.collect()} for g, v in views.items()}
    assert all(v.columns == names for v in views.values())
    assert got["minute"] == {
        ("v1", "view", at(0, 0)): (2, 3), ("v1", "view", at(0, 1)): (1, 4),
        ("v1", "view", at(23, 59)): (1, 8), ("v1", "like", at(23, 59)): (1, 0),
        ("v2", "view", at(0, 0, day=21)): (1, 16)}
    assert got["hour"] == {
        ("v1", "view", at(0)): (3, 7), ("v1", "view", at(23)): (1, 8), ("v1", "like", at(23)): (1, 0),
        ("v2", "view", at(0, day=21)): (1, 16)}
    assert got["day"] == {
        ("v1", "view", at(0)): (4, 15), ("v1", "like", at(0)): (1, 0), ("v2", "view", at(0, day=21)): (1, 16)}
    # (rows, events, watch_ms) per day; every raw row is accounted for in exactly one bucket
    # (the job's check against its input).
    assert transform.stats_by_day(views["minute"]) == {"2026-11-20": (4, 5, 15), "2026-11-21": (1, 1, 16)}
    assert transform.stats_by_day(transform.counted_minutes(distinct(df)), "copies") == {
        "2026-11-20": (4, 5, 15, 6), "2026-11-21": (1, 1, 16, 1)}
    assert transform.stats_by_day(views["day"]) == {"2026-11-20": (2, 5, 15), "2026-11-21": (1, 1, 16)}


def test_a_copy_on_a_day_within_the_span_before_drops_the_later_days_copies(spark):
    """Retries re-stamped across midnight count once, on the earlier day; a copy further back
    than the span does not drop anything; the day before the computed days only dedups."""
    df = raw_df(spark, [
        ("x", "v1", "view", at(23, 59, 59, 900), 5, 0, 5),
        ("x", "v1", "view", at(0, 0, 0, 400, day=21), 6, 0, 9),
        ("x", "v1", "view", at(0, 0, 1, 0, day=21), 7, 0, 10),
        ("y", "v2", "view", at(12, day=19), 1, 1, 1),
        ("y", "v2", "view", at(12, day=21), 2, 1, 2),
        ("z", "v3", "like", at(8, day=19), 3, 0, 1),
        ("z", "v3", "like", at(9), 4, 0, 2),
        ("w", "v3", "like", at(9), None, 0, 3),
    ])

    def by_day(span):
        return {(r["day"] - day_number(20), r["event_id"]): (r["dropped"], r["copies"], r["watch_ms"])
                for r in distinct(df, span=span).collect()}
    assert by_day(1) == {(0, "x"): (0, 1, 5), (1, "x"): (1, 2, 6), (1, "y"): (0, 1, 2),
                         (0, "z"): (1, 1, 4), (0, "w"): (0, 1, 0)}
    assert by_day(2)[(1, "y")] == (1, 1, 2)
    counted = transform.counted_minutes(distinct(df))
    # Day 20 counts x, w (z's copy of the 19th wins); day 21 counts y only; every row of the
    # computed days is accounted for, the dropped ones by the job's cross-day sum.
    assert transform.stats_by_day(counted, "copies") == {
        "2026-11-20": (2, 2, 5, 2), "2026-11-21": (1, 1, 2, 1)}


def test_empty_input_gives_empty_views(spark):
    views = views_of(distinct(raw_df(spark, [])))
    assert {g: v.count() for g, v in views.items()} == {"minute": 0, "hour": 0, "day": 0}
    assert transform.stats_by_day(views["hour"]) == {}
