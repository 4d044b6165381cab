"""Top-K's open-hour totals shared by the workers of a host (serving_layer/hourshare.py)."""

from __future__ import annotations

import os
import threading
import time

from serving_layer.hourshare import HourSnapshot, SharedHours
from schemas.event import parse_rfc3339_ms
from serving_layer.topk import VideoIndex, add_up, top_k
from speed_layer.views import Progress


class Reader:
    """Stands for the progress read and the HBase scan: counts its calls, takes a while,
    returns the current totals as minute 0 of each video, and a progress record."""

    def __init__(self, totals, seconds: float = 0.0):
        self.totals = totals
        self.seconds = seconds
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
        time.sleep(self.seconds)
        t = dict(self.totals)
        return (list(t), [0] * len(t), [c for c, _ in t.values()], [w for _, w in t.values()]), \
            Progress.parse({"batch_id": self.calls, "updated_at": f"2025-11-26T10:00:{self.calls:02d}Z"})


def rows(table) -> dict[str, tuple[int, int]]:
    return {r["video_id"]: (r["count"], r["watch_ms"]) for r in table.to_pylist()}


def test_one_worker_scans_the_others_read_its_copy_until_it_is_older_than_the_ttl(tmp_path):
    a, b = SharedHours(tmp_path, ttl_s=2.0), SharedHours(tmp_path, ttl_s=2.0)  # two workers
    read = Reader({"v1": (3, 30), "v2": (1, 0)})
    table, age = a.load("h.t.view.0", read)
    assert rows(table) == {"v1": (3, 30), "v2": (1, 0)} and age == 0.0
    read.totals = {"v1": (4, 40)}
    table, age = b.load("h.t.view.0", read)
    assert rows(table) == {"v1": (3, 30), "v2": (1, 0)} and 0 <= age < 2.0
    assert read.calls == 1
    kept = HourSnapshot(table, age, VideoIndex()).progress
    assert kept.batch_id == 1 and kept.record == {"batch_id": 1, "updated_at": "2025-11-26T10:00:01Z"}
    path = tmp_path / "h.t.view.0.arrow"
    os.utime(path, (time.time() - 2.5, time.time() - 2.5))  # the copy is now older than the TTL
    table, age = b.load("h.t.view.0", read)
    assert rows(table) == {"v1": (4, 40)} and age == 0.0 and read.calls == 2
    # Another hour is another copy.
    assert rows(a.load("h.t.view.3600000", Reader({"v9": (9, 0)}))[0]) == {"v9": (9, 0)}


def test_workers_asking_at_once_scan_once(tmp_path):
    read = Reader({"v1": (1, 0)}, seconds=0.3)
    got = []

    def worker() -> None:
        got.append(rows(SharedHours(tmp_path, ttl_s=5.0).load("h.t.view.0", read)[0]))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == [{"v1": (1, 0)}] * 4 and read.calls == 1


def test_an_unusable_directory_reads_hbase_directly(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    share = SharedHours(blocker / "top-hours", ttl_s=5.0)
    read = Reader({"v1": (2, 5)})
    assert rows(share.load("h.t.view.0", read)[0]) == {"v1": (2, 5)}
    assert rows(share.load("h.t.view.0", read)[0]) == {"v1": (2, 5)} and read.calls == 2


def test_a_snapshot_gives_each_videos_minutes_and_totals():
    import pyarrow as pa

    table = pa.table({"video_id": ["b", "a", "b", "c"], "minute": pa.array([7, 0, 3, 59], pa.int8()),
                      "count": [2, 5, 1, 4], "watch_ms": [20, 50, 10, 40]},
                     metadata={"progress": '{"watermark": "2025-11-26T09:50:00Z"}'})
    index = VideoIndex()
    snap = HourSnapshot(table, 0.5, index)
    m, c, w = snap.minutes("b")
    assert sorted(zip(m.tolist(), c.tolist(), w.tolist())) == [(3, 1, 10), (7, 2, 20)]
    assert [x.tolist() for x in snap.minutes("zz")] == [[], [], []]
    assert top_k(index, add_up(index, None, [snap.totals]), 10) == [("a", 5, 50), ("c", 4, 40), ("b", 3, 30)]
    assert snap.progress.watermark_ms == parse_rfc3339_ms("2025-11-26T09:50:00Z") and snap.totals.age_s == 0.5
    empty = HourSnapshot(table.slice(0, 0), 0.0, index)
    assert len(empty.totals.idx) == 0 and [x.tolist() for x in empty.minutes("a")] == [[], [], []]
