"""The publication log on the file:// lake: appends cannot be lost, a stale run does not publish
over a newer one, rollback walks back, cleanup keeps what it must; and the sink-log reader.
Rollbacks pin the day (an entry marked pinned)."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from adapters.lake import FileLakeStore
from batch_layer.catalog import Catalog, PublishError, version_key
from schemas.config import load_config
from speed_layer.archive_index import committed_entries


@pytest.fixture
def cat(tmp_path):
    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path), "batch": {"keep_versions": 2}})
    return Catalog(cfg)


def record(version: str, listed_at: str = "2026-11-28T00:00:00.000Z") -> dict:
    return {"version": version, "input": {"listed_at": listed_at}, "views": {}}


def make_version(cat, day, version):
    cat.store.put(f"{version_key(day, version)}/minute/part-0.parquet", b"x")


def test_put_if_absent_is_exclusive(tmp_path):
    store = FileLakeStore(tmp_path.as_uri())
    assert store.put_if_absent("a/b.json", b"1")
    assert not store.put_if_absent("a/b.json", b"2")
    assert store.get("a/b.json") == b"1"
    assert store.list("a/") == ["a/b.json"]  # no temporary file is left behind


def test_racing_publications_all_land_in_order(cat):
    day = "2026-11-20"
    results = []

    def run(i):
        results.append(cat.publish(day, record(f"20261128T000000Z-{i:08x}", f"2026-11-28T00:00:{i:02d}.000Z"),
                                   force=True))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = cat.entries(day)
    assert [e["seq"] for e in entries] == list(range(1, 9))
    assert sorted(e["version"] for e in entries) == sorted(r.version for r in results)
    assert all(r.published for r in results)


def test_a_run_with_older_input_does_not_replace_a_newer_version(cat):
    day = "2026-11-20"
    assert cat.publish(day, record("20261128T000002Z-00000002", "2026-11-28T00:00:02.000Z")).published
    stale = cat.publish(day, record("20261128T000001Z-00000001", "2026-11-28T00:00:01.000Z"))
    assert not stale.published and "newer" in stale.reason
    assert cat.current(day)["version"] == "20261128T000002Z-00000002"


def test_rollback_walks_back_and_stops_at_the_first(cat):
    day = "2026-11-20"
    for i in (1, 2, 3):
        v = f"20261128T00000{i}Z-0000000{i}"
        make_version(cat, day, v)
        cat.publish(day, record(v, f"2026-11-28T00:00:0{i}.000Z"))
    assert cat.rollback(day).version == "20261128T000002Z-00000002"
    assert cat.rollback(day).version == "20261128T000001Z-00000001"
    with pytest.raises(PublishError, match="no earlier version"):
        cat.rollback(day)
    assert [e["action"] for e in cat.entries(day)] == ["publish"] * 3 + ["rollback"] * 2
    assert [e["pinned"] for e in cat.entries(day)] == [False] * 3 + [True] * 2
    with pytest.raises(PublishError, match="no published version"):
        cat.rollback("2026-11-21")


def test_cleanup_keeps_the_newest_versions_and_young_orphans(cat):
    day = "2026-11-20"
    old_orphan = "20200101T000000Z-deadbeef"
    young_orphan = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-cafecafe"
    for v in (old_orphan, young_orphan):
        make_version(cat, day, v)
    for i in (1, 2, 3):
        v = f"20261128T00000{i}Z-0000000{i}"
        make_version(cat, day, v)
        cat.publish(day, record(v, f"2026-11-28T00:00:0{i}.000Z"))
    removed = cat.cleanup(day)
    assert sorted(removed) == sorted([old_orphan, "20261128T000001Z-00000001"])
    left = {k.split("/")[2] for k in cat.store.list(f"views/date={day}/")}
    assert left == {f"v={young_orphan}", "v=20261128T000002Z-00000002", "v=20261128T000003Z-00000003"}
    with pytest.raises(PublishError, match="no longer kept"):
        cat.rollback(day) and cat.rollback(day)


def test_sink_log_reader_uses_the_last_compaction_and_later_deltas(tmp_path):
    store = FileLakeStore(tmp_path.as_uri())
    meta = "raw/events/_spark_metadata"

    def entry(name, action="add"):
        return json.dumps({"path": f"file:///lake/raw/events/event_date=2026-11-20/{name}", "size": 10,
                           "isDir": False, "modificationTime": 1, "blockReplication": 1,
                           "blockSize": 1, "action": action})

    store.put(f"{meta}/0", ("v1\n" + entry("stale-before-compaction")).encode())
    store.put(f"{meta}/9.compact", ("v1\n" + entry("a") + "\n" + entry("b")).encode())
    store.put(f"{meta}/10", ("v1\n" + entry("c")).encode())
    store.put(f"{meta}/11", ("v1\n" + entry("b", "delete")).encode())
    store.put(f"{meta}/.12.tmp", b"v1\n{not json")  # a log file being written is not read
    paths = [e["path"].rsplit("/", 1)[1] for e in committed_entries(store, "raw/events")]
    assert paths == ["a", "c"]
    assert committed_entries(FileLakeStore((tmp_path / "none").as_uri()), "raw/events") == []
