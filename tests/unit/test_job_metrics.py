"""The jobs' Prometheus metrics: the streaming job's registry fed from Spark progress events (the
shape Spark 4 reports, written out here by hand), the registry a batch run pushes, and
`promtool check metrics` on both expositions."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import RunMetrics, run_registry
from batch_layer.job import DayResult, RunReport
from jobs.batch import describe_run
from speed_layer.metrics import StreamMetrics, partition_lag

NOW = 1_796_000_000.0  # 2026-11-30T...Z, the fixed clock of these tests


def speed_progress(batch_id: int = 7, rows: int = 120) -> dict:
    return {
        "name": "speed", "batchId": batch_id, "numInputRows": rows,
        "inputRowsPerSecond": 60.0, "processedRowsPerSecond": 240.5,
        "durationMs": {"triggerExecution": 1500, "addBatch": 1200},
        "eventTime": {"max": "2026-11-30T13:33:10.000Z", "watermark": "2026-11-30T13:23:10.000Z"},
        "stateOperators": [
            {"operatorName": "dedupeWithinWatermark", "numRowsTotal": 900,
             "memoryUsedBytes": 40_000, "numRowsDroppedByWatermark": 3},
            {"operatorName": "stateStoreSave", "numRowsTotal": 50, "memoryUsedBytes": 2_000,
             "numRowsDroppedByWatermark": 1}],
        "sources": [{
            "description": "KafkaV2[Subscribe[tally.events]]",
            "startOffset": {"tally.events": {"0": 10, "1": 20}},
            "endOffset": {"tally.events": {"0": 70, "1": 80}},
            "latestOffset": {"tally.events": {"0": 100, "1": 80}},
            "numInputRows": rows}],
    }


def samples(registry) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_partition_lag_reads_both_offset_forms():
    src = speed_progress()["sources"][0]
    assert partition_lag(src) == {("tally.events", "0"): 30, ("tally.events", "1"): 0}
    as_text = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in src.items()}
    assert partition_lag(as_text) == {("tally.events", "0"): 30, ("tally.events", "1"): 0}
    assert partition_lag({"endOffset": {"t": {"0": 5}}}) == {}  # no latestOffset reported


def test_stream_metrics_from_progress_events():
    clock = [NOW]
    m = StreamMetrics(clock=lambda: clock[0])
    # Before its first watermark, Spark reports the epoch: no watermark, not 56 years behind.
    first = speed_progress(6, 0)
    first["eventTime"] = {"watermark": "1970-01-01T00:00:00.000Z"}
    m.progress(first)
    assert ("tally_stream_watermark_delay_seconds", ()) not in samples(m.registry)
    m.progress(speed_progress(7, 120))
    m.progress(speed_progress(8, 30))
    m.progress({"name": "archive", "batchId": 2, "numInputRows": 150, "durationMs": {},
                "sources": [{"endOffset": '{"tally.events": {"0": 60}}',
                             "latestOffset": '{"tally.events": {"0": 100}}'}]})
    m.hbase_write(retries=2, failed=False)
    m.hbase_write(retries=0, failed=True)
    m.query_state("speed", True, restarted=True)
    clock[0] = NOW + 5
    got = samples(m.registry)
    q = (("query", "speed"),)
    assert got[("tally_stream_input_rows_total", q)] == 150
    assert got[("tally_stream_batches_total", q)] == 3
    assert got[("tally_stream_input_rows_total", (("query", "archive"),))] == 150
    assert got[("tally_stream_input_rows_total", (("query", "dlq"),))] == 0  # present from start
    assert got[("tally_stream_processed_rows_per_second", q)] == 240.5
    assert got[("tally_stream_batch_duration_seconds_count", q)] == 3
    assert got[("tally_stream_batch_duration_seconds_sum", q)] == 4.5
    lag = "tally_stream_kafka_lag_records"
    assert got[(lag, (("partition", "0"), ("query", "speed"), ("topic", "tally.events")))] == 30
    assert got[(lag, (("partition", "1"), ("query", "speed"), ("topic", "tally.events")))] == 0
    assert got[(lag, (("partition", "0"), ("query", "archive"), ("topic", "tally.events")))] == 40
    assert got[("tally_stream_state_rows", q)] == 950
    assert got[("tally_stream_state_memory_bytes", q)] == 42_000
    assert got[("tally_stream_dropped_late_rows_total", q)] == 12  # 4 per batch
    assert got[("tally_stream_hbase_write_retries_total", ())] == 2
    assert got[("tally_stream_hbase_write_failures_total", ())] == 1
    assert got[("tally_stream_query_restarts_total", q)] == 1
    assert got[("tally_stream_query_active", q)] == 1
    # 2026-11-30T13:23:10Z is epoch 1796044990: the distance is taken at scrape time.
    assert got[("tally_stream_watermark_timestamp_seconds", ())] == 1_796_044_990
    assert got[("tally_stream_watermark_delay_seconds", ())] == pytest.approx(NOW + 5 - 1_796_044_990)
    assert got[("tally_stream_max_event_time_seconds", ())] == 1_796_045_590
    assert got[("tally_stream_last_progress_age_seconds", q)] == pytest.approx(5.0)
    (info,) = [k for k in got if k[0] == "tally_build_info"]
    assert dict(info[1])["component"] == "stream" and got[info] == 1


def _day(day: str, published: bool, reason: str = "", version: str = "v1") -> DayResult:
    return DayResult(day, version if published or reason else "", published, reason, 10, 5,
                     raw_rows=12, seconds=1.0, rows={"minute": 7, "hour": 3, "day": 1})


def test_a_run_report_becomes_the_pushed_metrics():
    report = RunReport("nightly", [_day("2026-11-28", True, version="a"),
                                   _day("2026-11-29", False, "the input has fewer raw rows")])
    run = RunMetrics("nightly", "ok", 2.5)
    describe_run(report, run)
    assert (run.outcome, run.rows_in, run.rows_out, run.days_published, run.days_refused) == \
        ("refused", 24, 11, 1, 1)
    assert run.versions == {"2026-11-28": "a"}
    got = samples(run_registry(run, now=NOW))
    assert got[("tally_batch_run_outcome", (("outcome", "refused"),))] == 1
    assert got[("tally_batch_run_outcome", (("outcome", "ok"),))] == 0
    assert got[("tally_batch_published_version_info", (("day", "2026-11-28"), ("version", "a")))] == 1
    assert ("tally_batch_last_success_timestamp_seconds", ()) not in got  # a refused run
    assert got[("tally_batch_last_run_timestamp_seconds", ())] == NOW
    nothing = RunMetrics("nightly", "ok", 1.0)
    describe_run(RunReport("nightly", [], closed=False, reason="kafka: down"), nothing)
    assert nothing.outcome == "nothing"
    assert samples(run_registry(nothing, now=NOW))[
        ("tally_batch_last_success_timestamp_seconds", ())] == NOW


def test_promtool_accepts_both_expositions(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: make setup installs Debian's prometheus package"
    m = StreamMetrics(clock=lambda: NOW)
    m.progress(speed_progress())
    for name, data in (("stream", generate_latest(m.registry)),
                       ("batch", generate_latest(run_registry(RunMetrics("batch", "ok", 1.0))))):
        res = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True,
                             timeout=30)
        assert res.returncode == 0, (name, res.stdout, res.stderr)


class _Session:
    def stop(self) -> None:
        pass


@pytest.mark.parametrize("manifest", [None, {"rows": 1200, "files": [{"path": "a"}, {"path": "b"}]}])
def test_archive_compact_prints_a_json_line_and_pushes_the_run(monkeypatch, capsys, tmp_path,
                                                               manifest):
    import adapters.metrics
    import adapters.spark
    import batch_layer.compact
    from schemas.config import load_config
    from tally.cli import build_parser, cmd_archive

    pushed = []
    monkeypatch.setattr(adapters.spark, "build_session", lambda *a, **k: _Session())
    monkeypatch.setattr(batch_layer.compact, "compact_day", lambda spark, cfg, day: manifest)
    monkeypatch.setattr(adapters.metrics, "push_run", lambda cfg, run: pushed.append(run))
    cfg = load_config(environ={"TALLY_STATE_DIR": str(tmp_path)})
    args = build_parser().parse_args(["archive", "compact", "--date", "2026-11-20", "--json"])
    assert cmd_archive(args, cfg) == 0
    (line,) = capsys.readouterr().out.splitlines()
    got = json.loads(line)
    assert (got["command"], got["day"], got["compacted"]) == ("compact", "2026-11-20",
                                                             manifest is not None)
    assert (got["rows"], got["files"]) == ((1200, 2) if manifest else (None, None))
    (run,) = pushed
    assert (run.command, run.outcome, run.rows_out) == \
        ("compact", "ok" if manifest else "nothing", 1200 if manifest else 0)


def test_the_stream_has_its_spark_ui_unless_the_port_is_0():
    from jobs.stream import ui_conf
    from schemas.config import load_config

    assert ui_conf(load_config(environ={})) == {"spark.ui.enabled": "true", "spark.ui.port": "4040"}
    assert ui_conf(load_config(environ={"TALLY_STREAM__UI_PORT": "0"})) == {}
