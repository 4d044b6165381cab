"""The ``tally`` command line (CONTRACTS.md section 4).

Every command takes ``--config FILE`` (TOML; ``TALLY_*`` environment variables override it) and
``--state-dir``; a failure prints one clear line on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from typing import Any, Callable

from adapters import log
from schemas import __version__
from schemas.config import TallyConfig, load_config
from schemas.errors import TallyError

Handler = Callable[[argparse.Namespace, TallyConfig], int]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn
    return register


# stack ------------------------------------------------------------------------------------------

@command("stack")
def cmd_stack(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from tally.devstack.stack import Stack

    stack = Stack(cfg)
    if args.action == "up":
        log.progress(f"stack up: state directory {cfg.state_path}")
        stack.up()
        return 0
    if args.action == "down":
        return _report_down("stack", stack.down())
    return _print_status(stack.status(), args.json)


def _report_down(what: str, stopped: list[str]) -> int:
    log.progress(f"{what} down: stopped {', '.join(stopped) or 'nothing (nothing was running)'}")
    return 0


def _print_status(status: dict[str, dict], as_json: bool) -> int:
    from tally.devstack.stack import status_json

    if as_json:
        print(status_json(status))
    else:
        for p in status.values():
            mark = "healthy" if p["healthy"] else "UNHEALTHY"
            pid = p["pid"] if p["pid"] else "-"
            print(f"{p['part']:<13} {mark:<9} pid={pid:<7} {p['endpoint']:<32} {p['detail']}")
    return 0 if all(p["healthy"] for p in status.values()) else 1


# cluster ----------------------------------------------------------------------------------------

@command("cluster")
def cmd_cluster(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from tally.devstack import cluster

    if args.action == "pack":
        cluster.pack_env(cfg, force=args.force)
        return 0
    if args.action == "submit":
        return cluster.submit(cfg, args.job, args.passthrough, config_file=args.config,
                              print_only=args.print)
    if args.passthrough:
        raise TallyError(f"cluster {args.action}: takes no arguments after '--' "
                         "(only `cluster submit` does)")
    c = cluster.Cluster(cfg)
    if args.action == "up":
        log.progress(f"cluster up: state directory {cfg.state_path}")
        t0 = time.monotonic()
        started, _ = c.start_parts(list(c.parts.values()), "cluster up")
        log.progress(f"cluster up: {cfg.cluster.master_url} (web UI {c.webui}) healthy in "
                     f"{time.monotonic() - t0:.1f}s (started: {', '.join(started) or 'nothing'})")
        return 0
    if args.action == "down":
        return _report_down("cluster", c.down())
    return _print_status(c.status(), args.json)


# generate ---------------------------------------------------------------------------------------

@command("generate")
def cmd_generate(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from tally.devstack.generator import GeneratorOptions, run_generate

    opts = GeneratorOptions(
        events=args.events, videos=args.videos, start=args.start, days=args.days, seed=args.seed,
        late=args.late, duplicates=args.duplicates, invalid=args.invalid,
        watermark_ms=args.watermark_ms, restamp_ms=args.restamp_ms)
    summary = run_generate(cfg, opts, truth=args.truth, out=args.out, kafka=args.kafka,
                           rate=args.rate, topic=args.topic, archive_out=args.archive_out)
    print(json.dumps(summary, indent=2) if args.json else _summary_line(summary))
    return 0


def _summary_line(s: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.items())


# stream -----------------------------------------------------------------------------------------

@command("stream")
def cmd_stream(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from jobs.stream import run_stream

    return run_stream(cfg, master=None, trigger=args.trigger,
                      archive_trigger=args.archive_trigger, until_idle_s=args.until_idle)


@command("jars")
def cmd_jars(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from adapters.spark import connector_jars
    from tally.devstack.stack import ensure_jars

    ensure_jars(cfg)
    print(",".join(connector_jars(cfg)))
    return 0


# archive, batch, reprocess, rollback, audit -----------------------------------------------------

@command("archive")
def cmd_archive(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from adapters.spark import build_session

    from jobs.batch import parse_day

    if args.action == "index":
        return _archive_index(cfg, args.rebuild, args.json)
    if args.action == "import" and not args.source:
        raise TallyError("archive import: give the directory of archive-format Parquet files")
    if args.action == "compact" and not args.date:
        raise TallyError("archive compact: --date is required")
    day = parse_day(args.date, "--date") if args.action == "compact" else None
    if args.action == "import":
        from speed_layer.archive import import_files

        spark = build_session(cfg, "tally-archive", with_jars=cfg.lake_uri.startswith("s3"))
        try:
            import_files(spark, cfg, args.source)
        finally:
            spark.stop()
        return 0
    from adapters.metrics import Timed
    from batch_layer.compact import compact_day

    with Timed(cfg, "compact") as run:
        spark = build_session(cfg, "tally-archive", with_jars=cfg.lake_uri.startswith("s3"))
        try:
            manifest = compact_day(spark, cfg, day)
        finally:
            spark.stop()
        run.outcome = "ok" if manifest else "nothing"
        run.rows_in = run.rows_out = manifest["rows"] if manifest else 0
    if args.json:
        print(json.dumps({"command": "compact", "day": day.isoformat(),
                          "compacted": manifest is not None,
                          "rows": manifest["rows"] if manifest else None,
                          "files": len(manifest["files"]) if manifest else None,
                          "seconds": round(run.seconds, 1)}, sort_keys=True))
    return 0


def _archive_index(cfg: TallyConfig, rebuild: bool, as_json: bool) -> int:
    from adapters.lake import lake_store
    from speed_layer import archive_index

    store = lake_store(cfg)
    state = (archive_index.rebuild(cfg, store) if rebuild
             else archive_index.sync(cfg, store, by="cli"))
    days = {d: {"rows": s.rows, "files": s.files, "compacted": s.compacted}
            for d, s in sorted(state.days.items())}
    if as_json:
        print(json.dumps({"seq": state.seq, "archive": state.archive, "days": days}, sort_keys=True))
    else:
        for d, v in days.items():
            print(f"{d}  {v['rows']:>12,} raw rows  {v['files']:>6} files  {v['compacted']:>6} compacted")
        pos = state.archive
        print(f"{len(days)} days; archive position: "
              f"{json.dumps(pos['offsets']) + ' of ' + pos['topic'] if pos else 'none recorded'}")
    return 0


@command("batch")
def cmd_batch(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from jobs.batch import request_from, run_batch

    return run_batch(cfg, None, request_from(args.date, force=args.force, as_json=args.json))


@command("reprocess")
def cmd_reprocess(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from jobs.batch import request_from, run_batch

    return run_batch(cfg, None, request_from(first=args.first, last=args.last, force=args.force,
                                             allow_shrink=args.allow_shrink, as_json=args.json))


@command("rollback")
def cmd_rollback(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from batch_layer.catalog import Catalog
    from jobs.batch import parse_day

    from adapters.metrics import Timed

    day = parse_day(args.date, "--date").isoformat()
    catalog = Catalog(cfg)
    with Timed(cfg, "rollback") as run:
        before = catalog.current(day)
        result = catalog.rollback(day)
        run.days_published = 1
        run.versions = {day: result.version}
    if args.json:
        # A rolled-back day is pinned: the nightly run leaves it until it is published again.
        print(json.dumps({"command": "rollback", "day": day, "version": result.version,
                          "previous": before["version"], "entry": result.seq,
                          "pinned": bool(catalog.current(day).get("pinned"))}))
    else:
        print(f"{day}: version {result.version} published again (was {before['version']}), "
              f"entry {result.seq}")
    return 0


@command("audit")
def cmd_audit(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from batch_layer.audit import audit_day, render
    from jobs.batch import parse_day

    report = audit_day(cfg, parse_day(args.date, "--date"))
    print(json.dumps(report, indent=2) if args.json else render(report))
    # 3: a difference the speed layer's documented approximation does not explain (for alerts).
    return 0 if report["explained"] else 3


# serving ----------------------------------------------------------------------------------------

@command("serve")
def cmd_serve(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from serving_layer.server import run

    return run(cfg, args.host, args.port)


@command("front")
def cmd_front(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from tally.devstack.front import Front

    front = Front(cfg)
    if args.action == "up":
        front.up()
        return 0
    if args.action == "down":
        return _report_down("front", front.down())
    return _print_status(front.status(), args.json)


@command("query")
def cmd_query(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from serving_layer.client import render_counts

    body = _client(args, cfg).counts(args.video, event_type=args.event_type, start=args.start, end=args.end,
                         granularity=args.granularity)
    print(json.dumps(body, indent=2) if args.json else render_counts(body))
    return 0


@command("top")
def cmd_top(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from serving_layer.client import render_top

    body = _client(args, cfg).top(start=args.start, end=args.end, event_type=args.event_type,
                                  k=args.k)
    print(json.dumps(body, indent=2) if args.json else render_top(body))
    return 0


def _client(args: argparse.Namespace, cfg: TallyConfig):
    from serving_layer.client import TallyClient

    url = args.url or f"http://{cfg.serve.host}:{cfg.serve.port}"
    key = args.api_key or (cfg.serve.api_keys[0] if cfg.serve.api_keys else None)
    return TallyClient(url, api_key=key)


@command("config")
def cmd_config(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from schemas.config import to_toml

    # `show`: the settings in effect (defaults, the file, TALLY_* variables), secrets redacted.
    print(to_toml(cfg, redact=True), end="")
    return 0


# demo -------------------------------------------------------------------------------------------

@command("demo")
def cmd_demo(args: argparse.Namespace, cfg: TallyConfig) -> int:
    from tally.devstack.demo import run_demo

    return run_demo(cfg, events=args.events, days=args.days, lake=args.lake, wait=not args.no_wait,
                    config_path=args.config)


# parser -----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    def options(suppress: bool) -> argparse.ArgumentParser:
        # The options work before and after the command; after it, an option not given must
        # not reset what was given before it, hence SUPPRESS as the subcommands' default.
        d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--config", default=d(None),
                            help="TOML config file (TALLY_* environment variables override)")
        parser.add_argument("--state-dir", default=d(None),
                            help="state directory (default .tally, or TALLY_STATE_DIR)")
        parser.add_argument("-v", "--verbose", action="count", default=d(0), help="more log output")
        parser.add_argument("-q", "--quiet", action="store_true", default=d(False),
                            help="no progress lines")
        parser.add_argument("--log-format", choices=["text", "json"], default=d(None),
                            help="log lines as logfmt text or JSON (default log_format, or "
                                 "TALLY_LOG_FORMAT: text)")
        return parser

    common = options(suppress=True)
    p = argparse.ArgumentParser(prog="tally", parents=[options(suppress=False)],
                                description="Tally: exact and fresh event counts.")
    p.add_argument("--version", action="version", version=f"tally {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    st = sub.add_parser("stack", parents=[common], help="start, stop or inspect the local stack")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument("--json", action="store_true", help="status as JSON")

    cl = sub.add_parser("cluster", parents=[common],
                        help="a local Spark standalone master + worker, and jobs submitted to it")
    cla = cl.add_subparsers(dest="action", required=True, metavar="ACTION")
    cla.add_parser("up", parents=[common], help="start the master and the worker")
    cla.add_parser("down", parents=[common], help="stop them")
    cls = cla.add_parser("status", parents=[common], help="their pids and health")
    cls.add_argument("--json", action="store_true", help="status as JSON")
    clp = cla.add_parser("pack", parents=[common],
                         help="build (or find cached) the packed virtualenv the executors run in")
    clp.add_argument("--force", action="store_true", help="rebuild even when up to date")
    clj = cla.add_parser("submit", parents=[common],
                         help="run jobs/JOB.py on the cluster with spark-submit",
                         epilog="The job's own arguments follow a '--': "
                                "tally cluster submit batch -- --date 2026-11-20")
    clj.add_argument("job", choices=["batch", "stream"])
    clj.add_argument("--print", action="store_true",
                     help="print the spark-submit command line instead of running it")

    g = sub.add_parser("generate", parents=[common],
                       help="synthetic traffic with its exact ground truth")
    g.add_argument("--events", type=int, required=True, help="number of valid distinct events")
    g.add_argument("--videos", type=int, required=True)
    g.add_argument("--start", required=True, help="first UTC day or instant (RFC 3339 or YYYY-MM-DD)")
    g.add_argument("--days", type=int, default=1)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--late", type=float, default=0.0, help="fraction sent deliberately late")
    g.add_argument("--duplicates", type=float, default=0.0, help="fraction re-sent (retries)")
    g.add_argument("--invalid", type=float, default=0.0, help="fraction of invalid records added")
    g.add_argument("--restamp-ms", type=int, default=0, metavar="MS",
                   help="retries re-stamped by the client: each copy stamped 1..MS ms after its "
                        "original (across midnight it falls on the next day)")
    g.add_argument("--watermark-ms", type=int, default=None,
                   help="the speed layer's watermark delay late events are sent behind "
                        "(default: stream.watermark of the config)")
    g.add_argument("--truth", help="write the exact expected counts as Parquet")
    dest = g.add_mutually_exclusive_group()
    dest.add_argument("--out", help="write JSON lines in sending order")
    dest.add_argument("--kafka", action="store_true", help="send to Kafka through the producer")
    dest.add_argument("--archive-out", metavar="DIR",
                      help="write the valid records as archive-format Parquet files (input of "
                           "`tally archive import`)")
    g.add_argument("--rate", type=float, default=0.0, help="events/s when sending (0: as fast as possible)")
    g.add_argument("--topic", help="topic to send to (default kafka.topic)")
    g.add_argument("--json", action="store_true", help="summary as JSON")

    s = sub.add_parser("stream", parents=[common],
                       help="the speed layer and the raw archive as streaming queries")
    s.add_argument("--trigger", help="speed trigger interval (default stream.trigger, e.g. 2s)")
    s.add_argument("--archive-trigger", help="archive trigger interval (default 60s)")
    s.add_argument("--until-idle", type=float, metavar="S",
                   help="stop after S seconds without new input")

    a = sub.add_parser("archive", parents=[common],
                       help="load archive-format Parquet into the raw archive, compact a day, "
                            "or show (or rebuild) the archive's per-day index")
    a.add_argument("action", choices=["import", "compact", "index"])
    a.add_argument("source", nargs="?",
                   help="import: directory (file path or s3:// URI) of archive-format Parquet files")
    a.add_argument("--date", help="compact: the closed UTC day, YYYY-MM-DD")
    a.add_argument("--rebuild", action="store_true",
                   help="index: derive the per-day index again from the committed files")
    a.add_argument("--json", action="store_true",
                   help="index: as JSON; compact: one JSON result line on stdout")

    b = sub.add_parser("batch", parents=[common],
                       help="the nightly run (yesterday, every closed pending day, compaction), "
                            "or one closed day")
    b.add_argument("--date", help="one closed UTC day, YYYY-MM-DD (default: the nightly run)")
    b.add_argument("--force", action="store_true",
                   help="with --date: compute a day that is not closed, or a pinned (rolled-back) one")
    b.add_argument("--json", action="store_true", help="one JSON result line on stdout")
    r = sub.add_parser("reprocess", parents=[common], help="recompute batch views for a day range")
    r.add_argument("--from", dest="first", required=True, help="first UTC day, YYYY-MM-DD")
    r.add_argument("--to", dest="last", required=True, help="last UTC day (inclusive)")
    r.add_argument("--allow-shrink", action="store_true",
                   help="publish even when a day's input has fewer raw rows than before")
    r.add_argument("--force", action="store_true", help="also days that are not closed")
    r.add_argument("--json", action="store_true", help="one JSON result line on stdout")
    rb = sub.add_parser("rollback", parents=[common], help="publish the previous version of a day again")
    rb.add_argument("--date", required=True, help="the UTC day, YYYY-MM-DD")
    rb.add_argument("--json", action="store_true", help="one JSON result line on stdout")

    au = sub.add_parser("audit", parents=[common],
                        help="speed views against the published batch view of a day")
    au.add_argument("--date", required=True, help="the UTC day, YYYY-MM-DD")
    au.add_argument("--json", action="store_true", help="the report as JSON")

    sv = sub.add_parser("serve", parents=[common], help="the REST API under gunicorn")
    sv.add_argument("--host", help="bind address (default serve.host)")
    sv.add_argument("--port", type=int, help="port (default serve.port)")
    fr = sub.add_parser("front", parents=[common],
                        help="nginx load-balancing front.instances `tally serve` processes")
    fr.add_argument("action", choices=["up", "down", "status"])
    fr.add_argument("--json", action="store_true", help="status as JSON")
    qy = sub.add_parser("query", parents=[common], help="merged counts of a video from the REST API")
    qy.add_argument("video", help="the video_id")
    qy.add_argument("--event-type", default="view")
    qy.add_argument("--from", dest="start", required=True, help="RFC 3339 or epoch ms")
    qy.add_argument("--to", dest="end", required=True, help="RFC 3339 or epoch ms")
    qy.add_argument("--granularity", default="hour", choices=["minute", "hour", "day"])
    qy.add_argument("--url", help="the API (default http://serve.host:serve.port)")
    qy.add_argument("--api-key", help="X-API-Key (default: the first of serve.api_keys)")
    qy.add_argument("--json", action="store_true", help="the API's JSON instead of a table")

    tp = sub.add_parser("top", parents=[common], help="the top list from the REST API")
    tp.add_argument("--event-type", default="view")
    tp.add_argument("--from", dest="start", required=True, help="RFC 3339 or epoch ms")
    tp.add_argument("--to", dest="end", required=True, help="RFC 3339 or epoch ms")
    tp.add_argument("--k", type=int, default=10, help="how many videos (default 10)")
    tp.add_argument("--url", help="the API (default http://serve.host:serve.port)")
    tp.add_argument("--api-key", help="X-API-Key (default: the first of serve.api_keys)")
    tp.add_argument("--json", action="store_true", help="the API's JSON instead of a table")
    cf = sub.add_parser("config", parents=[common], help="the effective configuration")
    cf.add_argument("action", choices=["show"], help="show: as TOML, secrets redacted")

    sub.add_parser("jars", parents=[common],
                   help="the connector jars to pass to spark-submit --jars (comma-separated)")

    d = sub.add_parser("demo", parents=[common], help="the platform end to end on the local stack")
    d.add_argument("--events", type=int, default=50_000)
    d.add_argument("--days", type=int, default=3, help="complete UTC days of traffic, ending yesterday")
    d.add_argument("--lake", choices=["file", "s3"], default="file",
                   help="the lake on local disk or on the S3 endpoint")
    d.add_argument("--no-wait", action="store_true",
                   help="stop everything after the checks instead of serving until Ctrl-C")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    # After '--': arguments for a job that `cluster submit` passes on untouched.
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(passthrough) - 1] if "--" in argv else argv)
    args.passthrough = passthrough
    if passthrough and args.command != "cluster":
        parser.error(f"{args.command}: unexpected arguments after '--': {' '.join(passthrough)}")
    level = "WARNING" if args.verbose == 0 else ("INFO" if args.verbose == 1 else "DEBUG")
    try:
        log.setup(level, quiet=args.quiet, fmt=log.initial_format(args.log_format))
        # The flag wins over log_format; the config's value applies once the config is read.
        cfg = load_config(args.config, overrides={"state_dir": args.state_dir,
                                                  "log_format": args.log_format})
        log.use_format(cfg.log_format)
        return COMMANDS[args.command](args, cfg)
    except TallyError as exc:
        print(f"tally {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tally {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - not ours: still one line, the traceback on -v
        if args.verbose:
            traceback.print_exc()
        lines = str(exc).strip().splitlines()
        what = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        hint = "" if args.verbose else " (-v for the traceback)"
        print(f"tally {args.command}: error: {what}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
