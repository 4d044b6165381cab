"""The archive's per-day index against hand-written sink logs: incremental syncs read only what
is new (also across the sink's own log compaction and retention), concurrent writers lose
nothing, checkpoints and a rebuild give the same state as the segments."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.lake import FileLakeStore
from schemas.config import load_config
from speed_layer import archive_index as ai


class Sink:
    """A fake file sink: data files under event_date=D/ and a v1 metadata log."""

    def __init__(self, root, key="raw/events"):
        self.root, self.key = root, key
        self.batch = -1
        self.entries: list[dict] = []
        self.mtime = 1_000_000

    def write_batch(self, day_rows: dict[str, int], compact_every: int = 0, retention_ms: int = 0):
        self.batch += 1
        new = []
        for day, rows in day_rows.items():
            d = self.root / self.key / f"event_date={day}" / "event_hour=0"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"part-{self.batch:05d}-{day}.parquet"
            pq.write_table(pa.table({"x": list(range(rows))}), path)
            self.mtime += 60_000
            new.append({"path": path.as_uri(), "size": path.stat().st_size, "isDir": False,
                        "modificationTime": self.mtime, "blockReplication": 1,
                        "blockSize": 1, "action": "add"})
        self.entries += new
        meta = self.root / self.key / "_spark_metadata"
        meta.mkdir(parents=True, exist_ok=True)
        if compact_every and (self.batch + 1) % compact_every == 0:
            keep = [e for e in self.entries if not retention_ms or e["modificationTime"] > self.mtime - retention_ms]
            (meta / f"{self.batch}.compact").write_text("v1\n" + "\n".join(json.dumps(e) for e in keep))
            for p in meta.iterdir():  # Spark removes the deltas a compaction replaced
                if p.name.isdigit():
                    p.unlink()
        else:
            (meta / str(self.batch)).write_text("v1\n" + "\n".join(json.dumps(e) for e in new))
        return new


@pytest.fixture
def lake(tmp_path):
    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path / "state")})
    root = tmp_path / "lake"
    root.mkdir()
    return cfg, root, FileLakeStore(root.as_uri())


def _summary(state):
    return {d: (s.rows, s.files) for d, s in state.days.items()}


def test_incremental_sync_reads_only_new_entries_and_counts_rows(lake):
    cfg, root, store = lake
    sink = Sink(root)
    sink.write_batch({"2026-11-20": 5, "2026-11-21": 2})
    s1 = ai.sync(cfg, store, archive={"topic": "t", "offsets": {"0": 7}})
    assert _summary(s1) == {"2026-11-20": (5, 1), "2026-11-21": (2, 1)}
    assert s1.archive["offsets"] == {"0": 7}
    sink.write_batch({"2026-11-21": 3})
    s2 = ai.sync(cfg, store)
    assert _summary(s2) == {"2026-11-20": (5, 1), "2026-11-21": (5, 2)}
    assert s2.days["2026-11-21"].last_seq == s2.seq and s2.days["2026-11-20"].last_seq == s1.seq
    assert ai.sync(cfg, store).seq == s2.seq  # nothing new: no segment
    files = ai.ArchiveIndex(store).day("2026-11-21")
    assert files.rows == 5 and len(files.input_files()) == 2


def test_sink_log_compaction_and_retention_lose_nothing(lake):
    """Deltas replaced by the sink's compacted log, whose retention drops old entries: the index
    keeps every file it saw and takes only the new ones from the compacted log."""
    cfg, root, store = lake
    sink = Sink(root)
    expected = {}
    for i in range(25):
        day = f"2026-11-{10 + i % 3:02d}"
        sink.write_batch({day: i + 1}, compact_every=10, retention_ms=5 * 60_000)
        expected[day] = expected.get(day, 0) + i + 1
        if i % 4 == 0:  # syncs that miss some batches, as a stream whose listener lagged
            ai.sync(cfg, store)
    state = ai.sync(cfg, store)
    assert {d: s.rows for d, s in state.days.items()} == expected
    assert sum(s.files for s in state.days.values()) == 25
    # The compacted sink log itself no longer lists the early files: the index does.
    listed = {e["path"] for e in ai.committed_entries(store, "raw/events")}
    assert len(listed) < 25


def test_concurrent_writers_index_each_file_once(lake):
    cfg, root, store = lake
    sink = Sink(root)
    for i in range(6):
        sink.write_batch({"2026-11-20": 1, f"2026-11-{21 + i}": 2})
    errors = []

    def run():
        try:
            for _ in range(3):
                ai.sync(cfg, store)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    state = ai.ArchiveIndex(store).state()
    assert state.days["2026-11-20"].rows == 6 and state.days["2026-11-20"].files == 6
    assert sum(s.files for s in state.days.values()) == 12


def test_checkpoints_prune_and_readers_agree(lake, monkeypatch):
    cfg, root, store = lake
    monkeypatch.setattr(ai, "CHECKPOINT_EVERY", 4)
    sink = Sink(root)
    follower = ai.ArchiveIndex(store)  # a long-lived reader, as an API worker
    for i in range(15):
        sink.write_batch({f"2026-11-{1 + i % 5:02d}": i + 1})
        ai.sync(cfg, store)
        if i % 3 == 0:
            follower.state()
    fresh = ai.ArchiveIndex(store)
    assert _summary(fresh.state()) == _summary(follower.state())
    assert len(store.list(ai.LOG_PREFIX)) < 15  # pruned
    for d in fresh.state().days:
        assert fresh.day(d) == follower.day(d)
        assert fresh.day(d).rows == fresh.state().days[d].rows


def test_compaction_entries_decide_the_input(lake):
    cfg, root, store = lake
    sink = Sink(root)
    a = sink.write_batch({"2026-11-20": 4})
    b = sink.write_batch({"2026-11-20": 6})
    ai.sync(cfg, store)
    comp_file = root / "raw/compacted/event_date=2026-11-20/c=x/part-0.parquet"
    comp_file.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(10))}), comp_file)
    manifest = {"rows": 10, "covered": [a[0]["path"], b[0]["path"]],
                "files": [{"path": comp_file.as_uri(), "size": comp_file.stat().st_size}]}
    key = "raw/compacted/event_date=2026-11-20/_log/0000000001.json"
    store.put(key, json.dumps(manifest).encode())
    counter = ai.RowCounter(cfg)
    ai.sync(cfg, store, compactions=[ai.compaction_entry("2026-11-20", key, manifest, counter.rows)])
    late = sink.write_batch({"2026-11-20": 1})
    state = ai.sync(cfg, store)
    day = ai.ArchiveIndex(store).day("2026-11-20")
    assert [f.path for f in day.input_files()] == [comp_file.as_uri(), late[0]["path"]]
    assert day.rows == 11 == state.days["2026-11-20"].rows
    assert state.days["2026-11-20"].compacted == 2


def test_rebuild_derives_the_same_index_from_the_committed_files(lake):
    cfg, root, store = lake
    sink = Sink(root)
    imports = Sink(root, "raw/imports/20261120T000000Z-abcdef12")
    for i in range(12):
        sink.write_batch({f"2026-11-{1 + i % 4:02d}": i + 1}, compact_every=10)
    imports.write_batch({"2026-10-01": 9})
    incremental = ai.sync(cfg, store, sinks=[imports.key])
    rebuilt = ai.rebuild(cfg, store)
    assert _summary(rebuilt) == _summary(incremental)
    fresh = ai.ArchiveIndex(store)
    assert {f.path for f in fresh.day("2026-10-01").files} == {imports.entries[0]["path"]}
