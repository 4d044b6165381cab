"""Helpers for the speed-layer tests: an isolated installation (own topics, HBase tables, state
directory and lake), the streaming job as a real process, and readers of what it produced."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from schemas.config import TallyConfig, load_config
from tally.devstack.provision import create_bucket, create_tables, create_topics
from tests import SPARK_JAVA_OPTIONS


@dataclass
class Installation:
    cfg: TallyConfig
    env: dict[str, str]
    root: Path

    def tally(self, *args: str, timeout: float = 600, check: bool = True,
              env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, "-m", "tally.cli", *args], env={**self.env, **(env_extra or {})}, text=True,
                             capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"tally {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
        return res

    def generate(self, *args: str) -> None:
        """`tally generate ARGS` in this process (the same parser and handler as the command,
        without a Python start): for files only; traffic sent to Kafka goes through the CLI."""
        from tally.cli import build_parser, cmd_generate

        parsed = build_parser().parse_args(["generate", *args])
        assert not parsed.kafka, "send to Kafka through inst.tally('generate', ..., '--kafka')"
        assert cmd_generate(parsed, self.cfg) == 0

    def start_stream(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.root / "stream.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "tally.cli", "-v", "stream", *args],
                                env={**self.env, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for_log(self, text: str, timeout_s: float = 180, times: int = 1) -> None:
        """Wait until the stream's log shows ``text`` (e.g. that its queries are running) at
        least ``times`` times (the log accumulates over restarts of the job)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (self.root / "stream.log").read_text(errors="replace").count(text) >= times:
                return
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not in the stream log after {timeout_s}s:\n{self.stream_log()}")

    def stream_log(self) -> str:
        return self.stream_log_text()[-5000:]

    def stream_log_text(self) -> str:
        return (self.root / "stream.log").read_text(errors="replace")


def make_installation(base: TallyConfig, root: Path, unique: str, lake: str = "file",
                      hbase: bool = True, **env_extra: str) -> Installation:
    """An installation of its own; ``hbase=False`` creates no HBase tables, for installations
    that only run the batch layer (which reads and writes the lake only)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TALLY_") or k.startswith("TALLY_STACK__")}  # jars stay where they are
    env.update({
        "TALLY_STATE_DIR": str(root / "state"),
        "TALLY_KAFKA__BOOTSTRAP_SERVERS": base.kafka.bootstrap_servers,
        "TALLY_KAFKA__TOPIC": f"test.speed.{unique}",
        "TALLY_KAFKA__DLQ_TOPIC": f"test.speed.{unique}.dlq",
        "TALLY_HBASE__PORT": str(base.hbase.port),
        "TALLY_HBASE__ZOOKEEPER_PORT": str(base.hbase.zookeeper_port),
        "TALLY_HBASE__TABLE_PREFIX": f"t{unique}",
        "TALLY_LAKE__S3_ENDPOINT": base.lake.s3_endpoint,
        "TALLY_SPARK__MASTER": "local[2]",
        "TALLY_SPARK__DRIVER_MEMORY": "1536m",
        # Small for the tests' data: one shuffle partition per core (fewer tasks per micro-batch
        # and per batch stage), a speed table of 4 regions instead of 16 (faster to create and
        # drop). test_hbase.py checks the shared stack's 16.
        "TALLY_SPARK__SHUFFLE_PARTITIONS": "2",
        "TALLY_HBASE__SALT_BUCKETS": "4",
        "TALLY_SPARK__JAVA_OPTIONS": SPARK_JAVA_OPTIONS,
        # Off unless a test asks (their defaults would collide between concurrent streams).
        "TALLY_METRICS__STREAM_PORT": "0",
        "TALLY_STREAM__UI_PORT": "0",
    })
    if lake == "s3":
        env["TALLY_LAKE__URI"] = f"s3a://{base.lake.bucket}/t{unique}"
    env.update(env_extra)
    cfg = load_config(environ=env)
    create_topics(cfg)
    if hbase:
        create_tables(cfg)
    if lake == "s3":
        create_bucket(cfg)
    return Installation(cfg, env, root)


def wait_exit(proc: subprocess.Popen, timeout_s: float, inst: Installation) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"the stream did not stop within {timeout_s}s:\n{inst.stream_log()}")


def committed_offsets(inst: Installation, query: str) -> dict[str, int]:
    """Where a query of the stream has committed up to ({partition: next offset} of the topic):
    the offsets of the latest batch in its checkpoint's commit log (Spark's offset log, v1:
    version, metadata, then one line per source). A batch is committed after its sink wrote it,
    so this holds even when the job was killed before its listener wrote the progress record."""
    base = inst.cfg.state_path / "checkpoints" / query
    done = [int(p.name) for p in (base / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not done:
        return {}
    for line in (base / "offsets" / str(max(done))).read_text().splitlines()[2:]:
        offsets = json.loads(line).get(inst.cfg.kafka.topic)
        if offsets is not None:
            return {str(p): int(o) for p, o in offsets.items()}
    return {}


def stop_when_caught_up(inst: Installation, proc: subprocess.Popen, dlq_n: int = 0,
                        timeout_s: float = 600, lost_record_s: float = 10) -> int:
    """Stop the stream once it has consumed everything sent (instead of ``--until-idle``'s idle
    wait): when the speed and archive queries have committed up to the topic's end offsets
    (read now, so every record must have been sent before), their progress records show it too
    and the dead-letter topic holds ``dlq_n`` records, SIGTERM its process group (it stops
    between micro-batches, as under a supervisor) and return its exit code.
    The listener writes a progress record after its batch's commit, with what the tests read
    next (the speed layer's dropped-late counters; the archive's position in its index, which
    the batch layer's closure needs): stopping on the commit alone could lose it. A job killed
    between a commit and its listener leaves the record behind, and a restart with nothing new
    to read writes no other: such a record is waited for ``lost_record_s`` after the commit
    (less than ``--until-idle`` waited), then the stream is stopped as it is."""
    from batch_layer.job import topic_end_offsets
    from speed_layer.store import ARCHIVE_ROW, HBaseSpeedStore
    from tally.devstack.provision import end_offsets

    ends = topic_end_offsets(inst.cfg)
    store = HBaseSpeedStore(inst.cfg)
    rows = {"speed": None, "archive": ARCHIVE_ROW}

    def behind(read: dict) -> int:
        return sum(max(0, end - int(read.get(str(p), 0))) for p, end in ends.items())

    committed_at: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the stream exited ({proc.returncode}) before it caught up:\n"
                                 f"{inst.stream_log()}")
        now = time.monotonic()
        lag = {}
        for query, row in rows.items():
            if behind(committed_offsets(inst, query)):
                lag[query] = "not committed"
                continue
            committed_at.setdefault(query, now)
            record = store.read_progress(row) if row else store.read_progress()
            read = ((record or {}).get("offsets") or {}).get(inst.cfg.kafka.topic) or {}
            if behind(read) and now - committed_at[query] < lost_record_s:
                lag[query] = "progress record behind"
        missing = dlq_n - sum(end_offsets(inst.cfg, inst.cfg.kafka.dlq_topic).values())
        if missing > 0:
            lag["dead letters"] = f"{missing} missing"
        if not lag:
            break
        if now > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"the stream did not catch up within {timeout_s}s ({lag}):\n"
                                 f"{inst.stream_log()}")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    return wait_exit(proc, 120, inst)


def read_truth(path: Path) -> dict[tuple[str, str, int], tuple[int, int, int, int]]:
    out = {}
    for r in pq.read_table(path).to_pylist():
        out[(r["video_id"], r["event_type"], int(r["minute"].timestamp() * 1000))] = (
            r["count"], r["watch_ms"], r["count_ontime"], r["watch_ms_ontime"])
    return out


def hbase_minutes(cfg: TallyConfig) -> dict[tuple[str, str, int], tuple[int, int]]:
    from speed_layer.store import HBaseSpeedStore

    return {(m.video_id, m.event_type, m.minute_ms): (m.count, m.watch_ms)
            for m in HBaseSpeedStore(cfg).scan_all_minutes()}


def read_archive(spark, cfg: TallyConfig):
    from speed_layer.archive import archive_uri

    return spark.read.parquet(archive_uri(cfg))


def dlq_records(cfg: TallyConfig, expected: int, timeout_s: float = 60):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(cfg.kafka.dlq_topic, bootstrap_servers=cfg.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                             max_partition_fetch_bytes=cfg.kafka.max_message_bytes,
                             fetch_max_bytes=cfg.kafka.max_message_bytes * 4)
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000)
            for records in batch.values():
                out.extend(records)
            if len(out) >= expected and not batch:
                break
    finally:
        consumer.close()
    return out


def compare_with_truth(truth, minutes, dropped_late: int, ontime_may_drop: bool = False
                       ) -> dict[str, int]:
    """Check count_ontime <= speed <= count per minute (watch_ms too) and that what is missing
    equals the dropped-late counter. With ``ontime_may_drop`` (a capped catch-up) the lower
    bound is 0: on-time events may be dropped too, but every drop must still be counted.
    Returns figures for the report."""
    problems = []
    for key, (count, watch, count_on, watch_on) in truth.items():
        got_c, got_w = minutes.get(key, (0, 0))
        if ontime_may_drop:
            count_on, watch_on = 0, 0
        if not (count_on <= got_c <= count and watch_on <= got_w <= watch):
            problems.append((key, (count_on, count, watch_on, watch), (got_c, got_w)))
    extra = set(minutes) - set(truth)
    assert not extra, f"speed views hold minutes with no true events: {sorted(extra)[:5]}"
    assert not problems, f"{len(problems)} minutes out of bounds, first: {problems[:5]}"
    total_true = sum(v[0] for v in truth.values())
    total_speed = sum(v[0] for v in minutes.values())
    assert total_true - total_speed == dropped_late, (total_true, total_speed, dropped_late)
    return {"true_events": total_true, "speed_events": total_speed, "dropped_late": dropped_late,
            "ontime": sum(v[2] for v in truth.values())}


def sent_records(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def expected_archive_and_dlq(lines: list[bytes]):
    """From the sent records: the multiset of valid event_ids (duplicates included) and the
    invalid records with the validator's reason."""
    from schemas.errors import ValidationError
    from schemas.event import EventValidator

    v = EventValidator()
    clock = int(time.time() * 1000)
    valid_ids: collections.Counter = collections.Counter()
    invalid: list[tuple[bytes, str]] = []
    for raw in lines:
        try:
            valid_ids[v.validate_raw(raw, clock)["event_id"]] += 1
        except ValidationError as exc:
            invalid.append((raw, str(exc)))
    return valid_ids, invalid


def json_loads_safe(b: bytes):
    try:
        return json.loads(b)
    except ValueError:
        return None


def wait_for_watermark(inst, at_least: str, timeout_s: float = 300) -> dict:
    """Wait until the speed layer's progress record shows a watermark >= ``at_least``."""
    from speed_layer.store import HBaseSpeedStore

    store = HBaseSpeedStore(inst.cfg)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = store.read_progress()
        if p and p.get("watermark") and p["watermark"] >= at_least:
            return p
        time.sleep(1)
    raise AssertionError(f"watermark never reached {at_least}:\n{inst.stream_log()}")


def send_very_late(inst, n: int, day: str) -> list[dict]:
    """``n`` valid, distinct events on ``day``, far behind the watermark."""
    from adapters.producer import TallyProducer
    from schemas.event import parse_rfc3339_ms

    base = parse_rfc3339_ms(f"{day}T12:00:00Z")
    events = [{"event_id": f"very-late-{i}", "video_id": f"vid-{i % 7:06d}", "event_type": "view",
               "ts": base + i * 1000, "watch_ms": 100} for i in range(n)]
    with TallyProducer(inst.cfg) as producer:
        for e in events:
            producer.send_event(e)
    return events


def check_exact(inst, tmp_path, seed: int, gen_args: list[str], spark_reader,
                dropped_ok: bool = False) -> dict:
    """After a run of the generator's ``gen_args`` traffic (seed ``seed``, truth written to
    ``truth-<seed>.parquet``): the speed views equal the truth; the archive holds each valid record
    once per Kafka offset; the dead-letter topic holds every invalid record."""
    from speed_layer.store import HBaseSpeedStore

    out = tmp_path / f"sent-{seed}.jsonl"
    inst.generate(*gen_args, "--seed", str(seed), "--out", str(out))
    progress = HBaseSpeedStore(inst.cfg).read_progress()
    figures = compare_with_truth(read_truth(tmp_path / f"truth-{seed}.parquet"),
                                 hbase_minutes(inst.cfg), progress["dropped_late"],
                                 ontime_may_drop=dropped_ok)
    if not dropped_ok:
        assert figures["dropped_late"] == 0 and figures["speed_events"] == figures["true_events"]
    valid_ids, invalid = expected_archive_and_dlq(sent_records(out))
    archive = read_archive(spark_reader, inst.cfg)
    rows = archive.select("event_id", "kafka_partition", "kafka_offset").collect()
    assert collections.Counter(r["event_id"] for r in rows) == valid_ids
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in rows}) == len(rows)
    dlq = dlq_records(inst.cfg, len(invalid))
    assert {r.value for r in dlq} == {raw for raw, _ in invalid}
    return figures
