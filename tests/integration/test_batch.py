"""The batch layer against ground truth on real Spark, the lake both as file:// and on the S3
endpoint: exact views, concurrent runs, idempotence, reprocessing and rollback, edges."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from tests.integration.batchkit import (
    assert_exact, current, expected_from_events, generate_archive, load, published, stage,
)
from tests.integration.speedkit import make_installation

# The batch layer reads and writes the lake only: its installations here create no HBase tables.
D1, D2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)


@pytest.mark.parametrize("lake", ["file", "s3"])
def test_ground_truth(stack, tmp_path, unique, lake, spark_reader, capsys):
    from batch_layer.job import run_dates

    inst = make_installation(stack, tmp_path, unique, lake=lake, hbase=False)
    expected = generate_archive(inst, tmp_path, spark_reader, seed=41)
    # `tally reprocess --from D1 --to D2`, in process on the reader's session (one JVM start
    # fewer); its progress lines go to stderr as the command's do.
    capsys.readouterr()
    report = run_dates(spark_reader, inst.cfg, [D1, D2])
    err = capsys.readouterr().err
    assert not report.refused and [r.published for r in report.results] == [True, True], report.lines()
    assert "[2/2]" in err and err.count("published in") >= 2, err
    sizes = assert_exact(inst.cfg, [D1, D2], expected)
    print(f"batch vs truth ({lake}): buckets {sizes}")
    entry = current(inst, D1)
    assert entry["input"]["files"] > 0 and entry["totals"]["events"] == entry["input"]["distinct_events"]
    assert entry["input"]["raw_rows"] > entry["input"]["distinct_events"]  # duplicates were there


def test_concurrent_batch_and_reprocess(stack, tmp_path, unique, spark_reader):
    inst = make_installation(stack, tmp_path, unique, hbase=False)
    expected = generate_archive(inst, tmp_path, spark_reader, seed=43, days=1)
    cmds = [["batch", "--date", D1.isoformat()],
            ["reprocess", "--from", D1.isoformat(), "--to", D1.isoformat()]]
    procs = [subprocess.Popen([sys.executable, "-m", "tally.cli", *c], env=inst.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    from batch_layer.catalog import Catalog

    entries = Catalog(inst.cfg).entries(D1.isoformat())
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    # Each run either published its version (then it is in the log, in publication order) or
    # stood back for a version whose input was listed later; nothing else happened.
    published = [line.split(" version ")[1].split()[0] for out, _err in outs
                 for line in out.splitlines() if " published in " in line]
    refused = [out for out, _err in outs if "not published (version " in out and " is newer)" in out]
    assert len(published) + len(refused) == 2, outs
    assert sorted(e["version"] for e in entries) == sorted(published)
    entry = entries[-1]
    assert entry["views"]["minute"]["files"]
    assert_exact(inst.cfg, [D1], expected)


def test_idempotent(stack, tmp_path, unique, spark_reader):
    from batch_layer.job import run_day
    from batch_layer.views import BatchViews

    inst = make_installation(stack, tmp_path, unique, lake="s3", hbase=False)
    generate_archive(inst, tmp_path, spark_reader, seed=44, days=1)
    r1 = run_day(spark_reader, inst.cfg, D1)
    e1 = current(inst, D1)
    r2 = run_day(spark_reader, inst.cfg, D1)
    e2 = current(inst, D1)
    assert r1.published and r2.published and e1["version"] != e2["version"]
    assert e1["input"]["fingerprint"] == e2["input"]["fingerprint"]
    bv = BatchViews(inst.cfg)
    for g in ("minute", "hour", "day"):
        t1 = bv.read(e1, g).sort_by([("video_id", "ascending"), ("event_type", "ascending"),
                                     ("bucket_start", "ascending")])
        t2 = bv.read(e2, g).sort_by([("video_id", "ascending"), ("event_type", "ascending"),
                                     ("bucket_start", "ascending")])
        assert t1.num_rows > 0 and t1.equals(t2), g


def test_reprocess_adds_late_events_and_rollback_restores(stack, tmp_path, unique, spark_reader):
    inst = make_installation(stack, tmp_path, unique, hbase=False)
    first = generate_archive(inst, tmp_path, spark_reader, seed=45, days=2)
    from batch_layer.job import run_dates

    # The first version of both days in process (the CLI's reprocess and rollback come below).
    report = run_dates(spark_reader, inst.cfg, [D1, D2])
    assert [r.published for r in report.results] == [True, True], report.lines()
    assert_exact(inst.cfg, [D1, D2], first)
    # Late raw events for the first day arrive after it was published (a second traffic set).
    late = generate_archive(inst, tmp_path, spark_reader, seed=46, events=3000, days=1, name="late")
    res = inst.tally("reprocess", "--from", D1.isoformat(), "--to", D1.isoformat())
    assert "published" in res.stderr
    both = {g: dict(first[g]) for g in first}
    for g in both:
        for k, (c, w) in late[g].items():
            c0, w0 = both[g].get(k, (0, 0))
            both[g][k] = (c0 + c, w0 + w)
    assert_exact(inst.cfg, [D1, D2], both)
    from batch_layer.catalog import Catalog

    catalog = Catalog(inst.cfg)
    reprocessed, earlier = catalog.current(D1.isoformat()), catalog.entries(D1.isoformat())[0]
    res = inst.tally("rollback", "--date", D1.isoformat(), "--json")
    (line,) = res.stdout.splitlines()  # one JSON result line, for an orchestrator
    assert json.loads(line) == {"command": "rollback", "day": D1.isoformat(), "pinned": True,
                                "version": earlier["version"],
                                "previous": reprocessed["version"],
                                "entry": catalog.entries(D1.isoformat())[-1]["seq"]}, line
    assert catalog.entries(D1.isoformat())[-1]["action"] == "rollback"
    assert_exact(inst.cfg, [D1, D2], first)
    # There is nothing before the first version.
    res = inst.tally("rollback", "--date", D1.isoformat(), check=False)
    assert res.returncode == 1 and "no earlier version" in res.stderr


def test_edges_empty_single_boundaries_and_horizon(stack, tmp_path, unique, spark_reader):
    from batch_layer.catalog import Catalog
    from batch_layer.job import run_dates, run_day

    inst = make_installation(stack, tmp_path, unique, hbase=False)
    events = [
        {"event_id": "first-ms", "video_id": "vb", "event_type": "view", "ts": "2026-11-20T00:00:00.000Z", "watch_ms": 5},
        {"event_id": "last-ms", "video_id": "vb", "event_type": "view", "ts": "2026-11-20T23:59:59.999Z", "watch_ms": 7},
        {"event_id": "next-day", "video_id": "vb", "event_type": "view", "ts": 1795219200000},  # 2026-11-21T00:00:00Z
        {"event_id": "last-ms", "video_id": "vb", "event_type": "view", "ts": "2026-11-20T23:59:59.999Z", "watch_ms": 99},
        {"event_id": "lonely", "video_id": "vs", "event_type": "share", "ts": "2026-11-23T10:00:00.000+02:00"},
    ]
    load(spark_reader, inst.cfg, stage(events, tmp_path / "edge"))
    days = [dt.date(2026, 11, d) for d in (20, 21, 22, 23)]
    report = run_dates(spark_reader, inst.cfg, [days[0], days[1], days[3]])  # one run
    results = {dt.date.fromisoformat(r.day): r for r in report.results}
    assert sorted(results) == [days[0], days[1], days[3]], report.lines()
    assert all(r.published for r in results.values()), report.lines()
    assert results[days[0]].events == 2 and results[days[0]].raw_rows == 3
    assert results[days[1]].events == 1 and results[days[3]].events == 1
    expected = expected_from_events(events)
    assert_exact(inst.cfg, [days[0], days[1], days[3]], expected)
    got = published(inst.cfg, [days[0]])
    assert got["day"] == {("vb", "view", 1795132800000): (2, 12)}  # the first copy's watch_ms
    assert got["minute"][("vb", "view", 1795219140000)] == (1, 7)  # 23:59 holds the last ms

    catalog = Catalog(inst.cfg)
    empty = run_day(spark_reader, inst.cfg, days[2])
    assert empty.published and empty.events == 0 and empty.rows == {"minute": 0, "hour": 0, "day": 0}
    assert published(inst.cfg, [days[2]]) == {"minute": {}, "hour": {}, "day": {}}
    log_entry = json.loads(catalog.store.get(f"views/_log/date={days[2]}/0000000001.json"))
    assert log_entry["input"]["files"] == 0 and log_entry["totals"] == {"events": 0, "watch_ms": 0}
    # Its version depends on its own raw data and on the day before (the dedup span).
    assert log_entry["closed"] and set(log_entry["input"]["seen"]) == {"2026-11-21", "2026-11-22"}

    # The archive is append-only: a file whose rows went missing (here rewritten smaller) gives
    # an input with fewer raw rows than the archive's index holds for the day, which is refused
    # rather than published over the good version.
    import pyarrow.parquet as pq

    from batch_layer.source import day_input

    inp = day_input(inst.cfg, days[0])
    path = inp.files[0].path.replace("file://", "")
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    crc = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.crc")
    if os.path.exists(crc):  # Hadoop's checksum of the old content
        os.unlink(crc)
    shrunk = run_day(spark_reader, inst.cfg, days[0])
    assert shrunk.refused and not shrunk.published and "fewer than the 3" in shrunk.reason, shrunk.reason
    assert catalog.current(days[0].isoformat())["version"] == results[days[0]].version
    forced = run_day(spark_reader, inst.cfg, days[0], allow_shrink=True)
    assert forced.published and forced.raw_rows == 2
    assert catalog.current(days[0].isoformat())["input"]["raw_rows"] == 2  # the new count


@pytest.mark.parametrize("lake", ["file", "s3"])
def test_compaction_keeps_the_content_and_late_files_still_count(stack, tmp_path, unique, lake, spark_reader):
    from batch_layer import source
    from batch_layer.compact import compact_day
    from batch_layer.job import run_day

    inst = make_installation(stack, tmp_path, unique, lake=lake, hbase=False)
    first = generate_archive(inst, tmp_path, spark_reader, seed=47, events=6000, days=1)
    store = source.lake_store(inst.cfg)

    def rows(inp):
        df = source.read_input(spark_reader, inp)
        return sorted(tuple(r) for r in df.select("event_id", "kafka_partition", "kafka_offset", "json",
                                                  "ts", "watch_ms").collect())

    before = source.day_input(inst.cfg, D1, store)
    original_rows = rows(before)
    assert len(before.files) > 1
    manifest = compact_day(spark_reader, inst.cfg, D1)
    after = source.day_input(inst.cfg, D1, store)
    assert len(after.files) == len(manifest["files"]) < len(before.files)
    assert set(manifest["covered"]) == {f.path for f in before.files}
    assert rows(after) == original_rows  # same rows, each once

    # Late events archived after the compaction are read along with the compacted files.
    extra = [{"event_id": f"after-compaction-{i}", "video_id": "v-late", "event_type": "like",
              "ts": f"2026-11-20T08:{i:02d}:30.000Z"} for i in range(40)]
    load(spark_reader, inst.cfg, stage(extra, tmp_path / "after"))
    assert run_day(spark_reader, inst.cfg, D1).published
    merged = {g: {**first[g], **expected_from_events(extra)[g]} for g in first}
    assert_exact(inst.cfg, [D1], merged)
    # A second compaction covers the first one's originals and the late files: still each row once.
    compact_day(spark_reader, inst.cfg, D1)
    again = source.day_input(inst.cfg, D1, store)
    assert len(rows(again)) == len(original_rows) + len(extra)
    assert run_day(spark_reader, inst.cfg, D1).published
    assert_exact(inst.cfg, [D1], merged)


def test_retries_restamped_across_midnight_count_once(stack, tmp_path, unique, spark_reader):
    """A retry re-stamped after midnight (00:00:00.4 after 23:59:59.9) is the same event: the
    earlier day's copy counts, within batch.dedup_span_days (1); copies further apart are counted
    on each day, as the contract says. Generated traffic with re-stamped retries too."""
    inst = make_installation(stack, tmp_path, unique, hbase=False)
    staging, truth = tmp_path / "restamp", tmp_path / "restamp-truth.parquet"
    inst.generate("--events", "6000", "--videos", "40", "--start", "2026-11-10", "--days", "2",
                  "--seed", "48", "--duplicates", "0.2", "--restamp-ms", "3600000",
                  "--archive-out", str(staging), "--truth", str(truth))
    load(spark_reader, inst.cfg, staging)
    from tests.integration.batchkit import expected_from_truth

    expected = expected_from_truth(truth)
    manual = [
        {"event_id": "midnight", "video_id": "vm", "event_type": "view", "ts": "2026-11-10T23:59:59.900Z", "watch_ms": 3},
        {"event_id": "midnight", "video_id": "vm", "event_type": "view", "ts": "2026-11-11T00:00:00.400Z", "watch_ms": 3},
        {"event_id": "two-days", "video_id": "vm", "event_type": "view", "ts": "2026-11-10T12:00:00.000Z", "watch_ms": 1},
        {"event_id": "two-days", "video_id": "vm", "event_type": "view", "ts": "2026-11-12T12:00:00.000Z", "watch_ms": 1},
    ]
    load(spark_reader, inst.cfg, stage(manual, tmp_path / "manual", first_offset=10**9))
    want = {("vm", "view", 1794268800000): (2, 4),   # 2026-11-10: midnight and two-days
            ("vm", "view", 1794441600000): (1, 1)}   # 2026-11-12: two-days again (2 days later)
    res = inst.tally("reprocess", "--from", "2026-11-10", "--to", "2026-11-12", "--json")
    out = json.loads(res.stdout)
    assert [d["published"] for d in out["days"]] == [True, True, True], out
    days = [dt.date(2026, 11, d) for d in (10, 11, 12)]
    got = published(inst.cfg, days)
    for key, cw in want.items():
        assert got["day"].get(key) == cw, (key, got["day"].get(key))
    assert ("vm", "view", 1794355200000) not in got["day"]  # 2026-11-11: the copy is not counted
    merged = {g: {k: v for k, v in got[g].items() if k[0] != "vm"} for g in got}
    for g in expected:
        want_g = {k: v for k, v in expected[g].items()
                  if dt.datetime.fromtimestamp(k[2] / 1000, dt.timezone.utc).date() in set(days)}
        assert merged[g] == want_g, g
    entry = current(inst, dt.date(2026, 11, 11))
    assert entry["input"]["cross_day_copies"] > 0  # re-stamped copies dropped for the earlier day's
