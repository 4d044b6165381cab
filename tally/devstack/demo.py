"""``tally demo``: the whole platform end to end on the local stack, in a few minutes.

It brings the stack up, starts the streaming job, sends several days of generated traffic (with
retries, late and invalid events) in timestamp order, waits until the stream has read all of it,
runs the batch job for every day but the last, starts the REST API under gunicorn, and prints, for
the busiest videos, the merged counts next to the generator's ground truth: the batch part must
equal the truth, the speed part must lie between the on-time count and the full count (the stream
drops events later than its watermark; the batch does not). It writes a PNG chart of one video's
merged counts and leaves the API and the dashboard running until Ctrl-C, then stops what it started.

Each run owns its names (``tally.demo.<run>.events``, HBase tables ``demo<run>_*``, a lake prefix
of its own) so runs never mix; the previous run's tables, topics and files are removed first.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters import log
from schemas.config import TallyConfig, load_config
from schemas.errors import TallyError

LOG = log.get("tally.demo")
STEPS = 7
SHOWN_VIDEOS = 5


class DemoError(TallyError):
    """A demo step did not finish (the message says which and where its log is)."""


def _step(n: int, msg: str) -> None:
    log.progress(f"demo {n}/{STEPS}: {msg}")


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _day_ms(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() * 1000)


# Each run's own names ----------------------------------------------------------------------------

def _remove_previous_runs(cfg: TallyConfig, demo_root: Path) -> None:
    """Earlier demo runs' tables, topics and local files (the S3 endpoint is in memory anyway)."""
    import happybase
    from kafka.admin import KafkaAdminClient

    if demo_root.is_dir():
        shutil.rmtree(demo_root, ignore_errors=True)
    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port, timeout=cfg.hbase.timeout_ms)
    try:
        for name in conn.tables():
            if name.startswith(b"demo"):
                conn.delete_table(name, disable=True)
    finally:
        conn.close()
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers)
    try:
        old = [t for t in admin.list_topics() if t.startswith("tally.demo.")]
        if old:
            admin.delete_topics(old)
    finally:
        admin.close()


def _demo_env(cfg: TallyConfig, run: str, run_dir: Path, lake: str,
              first_day: dt.date) -> dict[str, str]:
    from adapters.paths import lib_dir

    env = dict(os.environ)
    env.update({
        "TALLY_STATE_DIR": str(run_dir / "state"),
        "TALLY_KAFKA__TOPIC": f"tally.demo.{run}.events",
        "TALLY_KAFKA__DLQ_TOPIC": f"tally.demo.{run}.events.dlq",
        "TALLY_HBASE__TABLE_PREFIX": f"demo{run}",
        "TALLY_LAKE__URI": (f"s3a://{cfg.lake.bucket}/demo/{run}" if lake == "s3"
                            else (run_dir / "lake").as_uri()),
        "TALLY_BATCH__HORIZON_START": first_day.isoformat(),
        # The jars stay where this installation has them.
        "TALLY_STACK__LIB_DIR": str(lib_dir(cfg)),
    })
    return env


# Processes the demo starts -------------------------------------------------------------------------

def _queries_started(cfg: TallyConfig) -> bool:
    """Every query of the streaming job has started: Spark has written its checkpoint's
    metadata (each demo run has a state directory of its own, so none is left from before)."""
    from speed_layer.app import QUERIES

    return all((cfg.state_path / "checkpoints" / q / "metadata").is_file() for q in QUERIES)


class Child:
    """A ``tally`` subcommand in its own process group, output to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tally.cli", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_line(self, prefix: str) -> str:
        lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                 if ln.startswith(prefix)]
        return lines[-1].strip() if lines else "starting"

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int | None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._log.close()
        return self.proc.returncode


def _wait(what: str, ready, timeout_s: float, child: Child | None = None,
          every_s: float = 15.0, status=None) -> None:
    """Wait for ``ready()`` with a timeout, saying every ``every_s`` what is awaited."""
    t0 = time.monotonic()
    said = t0
    while not ready():
        now = time.monotonic()
        if child is not None and not child.alive():
            raise DemoError(f"{child.name} exited while waiting for {what} "
                            f"(log {child.log_path}):\n{child.tail()}")
        if now - t0 > timeout_s:
            where = f" (log {child.log_path})" if child else ""
            raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}{where}")
        if now - said >= every_s:
            said = now
            log.progress(f"  ... {what} ({now - t0:.0f}s{'; ' + status() if status else ''})")
        time.sleep(0.5)


def _read_up_to(record: dict[str, Any] | None, topic: str) -> dict[int, int]:
    offsets = ((record or {}).get("offsets") or {}).get(topic, {})
    return {int(p): int(o) for p, o in offsets.items()}


# What the demo shows -------------------------------------------------------------------------------

def _truth(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["minute_ms"] = int(r["minute"].timestamp() * 1000)
    return rows


def compare(body: dict[str, Any], truth: list[dict[str, Any]], horizon_ms: int) -> dict[str, Any]:
    """One video's merged answer against the truth: the batch part equal, the speed part within
    [on-time count, count]."""
    batch = sum(b["count"] for b in body["buckets"] if b["source"] == "batch")
    speed = sum(b["count"] for b in body["buckets"] if b["source"] == "speed")
    mine = [r for r in truth if r["video_id"] == body["video_id"]
            and r["event_type"] == body["event_type"]]
    true_batch = sum(r["count"] for r in mine if r["minute_ms"] < horizon_ms)
    true_speed = sum(r["count"] for r in mine if r["minute_ms"] >= horizon_ms)
    ontime_speed = sum(r["count_ontime"] for r in mine if r["minute_ms"] >= horizon_ms)
    ok = batch == true_batch and ontime_speed <= speed <= true_speed
    return {"video_id": body["video_id"], "batch": batch, "true_batch": true_batch,
            "speed": speed, "true_speed": true_speed, "ontime_speed": ontime_speed,
            "total": body["total"], "ok": ok}


def render_comparison(rows: list[dict[str, Any]], event_type: str) -> str:
    lines = [f"{'video':<14}{'batch part':>12}{'truth':>9}   {'speed part':>10}"
             f"{'truth on-time..all':>22}   {'merged':>8}  check",
             "-" * 92]
    for r in rows:
        lines.append(f"{r['video_id']:<14}{r['batch']:>12,}{r['true_batch']:>9,}   {r['speed']:>10,}"
                     f"{r['ontime_speed']:>13,}..{r['true_speed']:<7,}   {r['total']:>8,}  "
                     f"{'ok' if r['ok'] else 'WRONG'}")
    lines.append(f"({event_type} events; batch part = days before the horizon, exact; speed part = "
                 "after it, approximate by the watermark)")
    return "\n".join(lines)


def write_chart(body: dict[str, Any], path: Path) -> None:
    """Hourly merged counts as bars, batch and speed parts in two colours, the horizon marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [dt.datetime.fromisoformat(b["start"].replace("Z", "+00:00")) for b in body["buckets"]]
    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    width = dt.timedelta(minutes=50)
    for source, colour in (("batch", "#1f77b4"), ("speed", "#ff7f0e")):
        xs = [s for s, b in zip(starts, body["buckets"]) if b["source"] == source]
        ys = [b["count"] for b in body["buckets"] if b["source"] == source]
        if xs:
            ax.bar(xs, ys, width=width, align="edge", color=colour,
                   label=f"{source} part ({sum(ys):,})")
    if body.get("batch_horizon"):
        horizon = dt.datetime.fromisoformat(body["batch_horizon"].replace("Z", "+00:00"))
        ax.axvline(horizon, color="black", linestyle="--", linewidth=1.2)
        ax.annotate("batch horizon", (horizon, ax.get_ylim()[1] * 0.95), xytext=(4, 0),
                    textcoords="offset points", fontsize=9)
    ax.set_title(f"{body['video_id']}: {body['event_type']} per {body['granularity']}, "
                 f"merged (total {body['total']:,})")
    ax.set_ylabel("count")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# The demo ---------------------------------------------------------------------------------------------

def run_demo(cfg: TallyConfig, events: int = 50_000, days: int = 3, lake: str = "file",
             wait: bool = True, config_path: str | None = None) -> int:
    from tally.devstack.stack import Stack

    t0 = time.monotonic()
    stack = Stack(cfg)
    was_up = all(s["healthy"] for s in stack.status().values())
    _step(1, "the local stack (Kafka, HBase + Thrift, the S3 endpoint)"
          + (" is running" if was_up else ": starting"))
    stack.up()
    children: list[Child] = []
    try:
        rc = _run(cfg, events, days, lake, wait, config_path, children, t0)
    except KeyboardInterrupt:
        rc = 130
    finally:
        for child in reversed(children):
            # SIGINT lets the stream stop its queries cleanly; gunicorn stops on SIGTERM.
            child.stop(signal.SIGINT if child.name == "stream" else signal.SIGTERM)
        if children:
            log.progress("demo: stopped the streaming job and the API")
        if not was_up and wait:
            stack.down()
            log.progress("demo: stopped the local stack")
    return rc


def _run(cfg: TallyConfig, events: int, days: int, lake: str, wait: bool,
         config_path: str | None, children: list[Child], t0: float) -> int:
    from serving_layer.client import TallyClient
    from speed_layer.store import ARCHIVE_ROW, HBaseSpeedStore
    from tally.devstack.generator import GeneratorOptions, run_generate
    from tally.devstack.provision import create_bucket, create_tables, create_topics, end_offsets

    today = dt.datetime.now(dt.timezone.utc).date()
    first = today - dt.timedelta(days=days)  # the last `days` complete UTC days
    last = today - dt.timedelta(days=1)
    run = time.strftime("%m%d%H%M%S", time.gmtime())
    demo_root = cfg.state_path / "demo"
    _remove_previous_runs(cfg, demo_root)
    run_dir = demo_root / run
    run_dir.mkdir(parents=True)
    env = _demo_env(cfg, run, run_dir, lake, first)
    if config_path:
        env["TALLY_CONFIG"] = config_path
    dcfg = load_config(config_path, environ=env)
    create_topics(dcfg)
    create_tables(dcfg)
    if lake == "s3":
        create_bucket(dcfg)
    log.progress(f"  run {run}: topic {dcfg.kafka.topic}, tables {dcfg.hbase.table_prefix}_*, "
                 f"lake {dcfg.lake_uri}, logs in {run_dir}")

    _step(2, "starting the streaming job (speed views to HBase, raw archive to the lake)")
    stream = Child("stream", ["-v", "stream", "--trigger", "2s", "--archive-trigger", "10s"], env,
                   run_dir / "stream.log")
    children.append(stream)
    _wait("the stream's queries to start", lambda: _queries_started(dcfg), 240, stream)

    truth_path = run_dir / "truth.parquet"
    _step(3, f"sending {events:,} events over {days} days ({first} to {last}) in timestamp order, "
          "with 2% retries, 1% late and 0.5% invalid records")
    summary = run_generate(dcfg, GeneratorOptions(events=events, videos=max(50, events // 100),
                                                  start=first.isoformat(), days=days,
                                                  seed=int(run), late=0.01, duplicates=0.02,
                                                  invalid=0.005),
                           truth=str(truth_path), kafka=True)
    log.progress(f"  sent {summary['records_sent']:,} records at {summary['records_per_s']:,.0f}/s; "
                 f"truth -> {truth_path}")

    _step(4, "waiting for the stream to count and archive everything sent")
    ends = end_offsets(dcfg)
    store = HBaseSpeedStore(dcfg)
    topic = dcfg.kafka.topic

    def behind() -> tuple[int, int]:
        speed, archive = (_read_up_to(store.read_progress(), topic),
                          _read_up_to(store.read_progress(ARCHIVE_ROW), topic))
        return (sum(max(0, e - speed.get(p, 0)) for p, e in ends.items()),
                sum(max(0, e - archive.get(p, 0)) for p, e in ends.items()))

    _wait("the speed views and the archive to catch up", lambda: behind() == (0, 0), 600, stream,
          status=lambda: "records behind: speed {:,}, archive {:,}".format(*behind()))

    batch_last = last - dt.timedelta(days=1)
    _step(5, f"the batch job for {first} to {batch_last} (exact, from the archive)")
    batch = Child("batch", ["reprocess", "--from", first.isoformat(), "--to", batch_last.isoformat()],
                  env, run_dir / "batch.log")
    children.append(batch)
    n_days = (batch_last - first).days + 1
    _wait(f"{n_days} days to be published", lambda: not batch.alive(), 900, every_s=20,
          status=lambda: batch.last_line("batch ")[:100])
    if batch.proc.returncode != 0:
        raise DemoError(f"the batch job failed (log {batch.log_path}):\n{batch.tail()}")
    children.remove(batch)
    batch.stop()

    _step(6, f"starting the REST API on http://{dcfg.serve.host}:{dcfg.serve.port}")
    api = Child("api", ["serve"], env, run_dir / "api.log")
    children.append(api)
    url = f"http://{dcfg.serve.host}:{dcfg.serve.port}"
    client = TallyClient(url, api_key=dcfg.serve.api_keys[0] if dcfg.serve.api_keys else None,
                         max_retries=0)

    def ready() -> bool:
        try:
            client.request("GET", "/readyz")
            return True
        except TallyError:
            return False

    _wait("the API to be ready", ready, 120, api)

    _step(7, "merged counts next to the ground truth")
    truth = _truth(truth_path)
    per_video: dict[str, int] = {}
    for r in truth:
        if r["event_type"] == "view":
            per_video[r["video_id"]] = per_video.get(r["video_id"], 0) + r["count"]
    shown = sorted(per_video, key=lambda v: (-per_video[v], v))[:SHOWN_VIDEOS]
    start, end = f"{first.isoformat()}T00:00:00Z", f"{today.isoformat()}T00:00:00Z"
    bodies = [client.counts(v, start, end, event_type="view", granularity="hour") for v in shown]
    horizon = bodies[0].get("batch_horizon")
    horizon_ms = _day_ms(dt.date.fromisoformat(horizon[:10])) if horizon else _day_ms(first)
    rows = [compare(b, truth, horizon_ms) for b in bodies]
    print(render_comparison(rows, "view"))
    fresh = bodies[0]["freshness"]
    progress = store.read_progress() or {}
    print(f"batch horizon {horizon} (versions {', '.join(bodies[0].get('batch_versions', {}).values())})")
    print(f"speed part: max event time {fresh.get('speed_max_event_time')}, watermark "
          f"{fresh.get('speed_watermark')}, updated {fresh.get('speed_updated_at')}; "
          f"{progress.get('dropped_late', 0):,} events dropped as later than the watermark "
          "(counted by the batch, never by the speed layer)")
    chart = run_dir / "merged-counts.png"
    write_chart(bodies[0], chart)
    print(f"chart of {shown[0]}'s merged counts: {chart}")
    ok = all(r["ok"] for r in rows)
    log.progress(f"demo: {'all checks passed' if ok else 'SOME CHECKS FAILED'} in "
                 f"{time.monotonic() - t0:.0f}s")
    if not wait:
        return 0 if ok else 1
    print(f"\nthe API and the dashboard are running: {url}/  (API: {url}/v1/videos/{shown[0]}/counts"
          f"?from={start}&to={end}&granularity=hour, docs: {url}/openapi.json)\n"
          "the streaming job keeps counting new events on the demo topic; Ctrl-C stops everything")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            for child in children:
                if not child.alive():
                    raise DemoError(f"{child.name} exited (log {child.log_path}):\n{child.tail()}")
            time.sleep(1)
    except KeyboardInterrupt:
        print()
    return 0 if ok else 1
