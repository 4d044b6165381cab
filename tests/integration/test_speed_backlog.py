"""The speed layer's catch-up hazard, against ground truth: started after the whole input was
written, with no per-trigger cap the counts equal the truth; with a cap, partitions advance
unevenly in event time and any difference is exactly the counted late drops."""

from __future__ import annotations

import json

import pytest

from tests.integration.speedkit import check_exact, make_installation, stop_when_caught_up

GEN = ["--events", "40000", "--videos", "300", "--start", "2026-11-21", "--days", "2",
       "--duplicates", "0.03", "--invalid", "0.005", "--late", "0"]


@pytest.mark.parametrize("cap", [0, 15000])
def test_backlog(stack, tmp_path, unique, spark_reader, cap):
    inst = make_installation(stack, tmp_path, unique,
                             TALLY_STREAM__MAX_OFFSETS_PER_TRIGGER=str(cap))
    seed = 33
    res = inst.tally("generate", *GEN, "--seed", str(seed), "--kafka", "--truth",
                     str(tmp_path / f"truth-{seed}.parquet"), "--json")
    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "3s")
    assert stop_when_caught_up(inst, stream, json.loads(res.stdout)["invalid"]) == 0, inst.stream_log()
    figures = check_exact(inst, tmp_path, seed, GEN, spark_reader, dropped_ok=cap > 0)
    print(f"backlog, cap {cap}: {figures}")
