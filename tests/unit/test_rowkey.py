"""The HBase row-key codec: round trips, time order within a video, contiguous ranges."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import rowkey

IDS = st.text(alphabet="ABCXYZabcxyz0189_-", min_size=1, max_size=64)
TYPES = st.sampled_from(["view", "like", "dislike", "share", "comment"])
MINUTES = st.integers(min_value=946_684_800_000 // 60_000, max_value=2**32 - 1)


@settings(max_examples=500, deadline=None)
@given(IDS, TYPES, MINUTES, st.integers(1, 256))
def test_round_trip(video, etype, minute, buckets):
    key = rowkey.encode(video, etype, minute * 60_000 + 59_999, buckets)
    assert rowkey.decode(key) == (video, etype, minute * 60_000)
    assert rowkey.minute_of(key) == minute * 60_000
    assert key[0] == rowkey.salt_of(video, buckets) < buckets


@settings(max_examples=500, deadline=None)
@given(IDS, TYPES, MINUTES, MINUTES)
def test_rows_of_a_video_sort_by_time(video, etype, m1, m2):
    k1 = rowkey.encode(video, etype, m1 * 60_000, 16)
    k2 = rowkey.encode(video, etype, m2 * 60_000, 16)
    assert (k1 < k2) == (m1 < m2)


@settings(max_examples=300, deadline=None)
@given(IDS, IDS, TYPES, st.integers(946_684_800_000 // 60_000, 2**32 - 10_002),
       st.integers(0, 10_000), MINUTES)
def test_scan_range_holds_exactly_the_video_and_range(video, other, etype, start, span, probe):
    lo, hi = rowkey.scan_range(video, etype, start * 60_000, (start + span) * 60_000 + 1, 16)
    inside = rowkey.encode(video, etype, probe * 60_000, 16)
    assert (lo <= inside < hi) == (start <= probe <= start + span)
    if other != video:
        # Another video never falls inside, even when one id is a prefix of the other.
        foreign = rowkey.encode(other, etype, probe * 60_000, 16)
        assert not lo <= foreign < hi


def test_ids_that_are_prefixes_of_each_other_stay_apart():
    a = rowkey.prefix("abc", "view", 1)
    b = rowkey.encode("abcd", "view", 0, 1)
    assert not b.startswith(a)
