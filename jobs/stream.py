"""spark-submit entry point of the streaming application (speed views, raw archive, dead letters).

    spark-submit --jars <connector jars> jobs/stream.py [--config FILE] [--trigger 2s] [--until-idle S]

The same as `tally stream`; the SparkSession is built here, at run time, and handed to the app.
"""

from __future__ import annotations

import argparse
import sys


def run_stream(cfg, master: str | None, trigger: str | None = None,
               archive_trigger: str | None = None, until_idle_s: float | None = None) -> int:
    """Build the session, run the streaming app until stopped, stop the session. Shared by
    ``tally stream`` (master from the config) and spark-submit (master from spark-submit)."""
    from adapters.spark import build_session, stop_session
    from speed_layer.app import QUERIES, CheckpointLock, StreamingApp

    # A second job on the same checkpoints fails here, before a JVM is started for it: each
    # lock is tried and let go again (the app takes them for the job's life when it starts,
    # and still refuses a job that got there in between).
    for q in QUERIES:
        lock = CheckpointLock(cfg.state_path / "checkpoints" / f"{q}.lock")
        lock.acquire()
        lock.release()
    spark = build_session(cfg, "tally-stream", master=master)
    app = StreamingApp(spark, cfg, trigger=_duration(trigger),
                       archive_trigger=_duration(archive_trigger), until_idle_s=until_idle_s)
    app.install_signal_handlers()
    try:
        app.start()
        return app.run()
    finally:
        stop_session(spark)


def main(argv: list[str] | None = None) -> int:
    from adapters import log
    from schemas.config import load_config
    from schemas.errors import TallyError

    ap = argparse.ArgumentParser(prog="stream")
    ap.add_argument("--config")
    ap.add_argument("--state-dir")
    ap.add_argument("--trigger", help="speed trigger interval, e.g. '2s'")
    ap.add_argument("--archive-trigger", help="archive trigger interval, e.g. '60s'")
    ap.add_argument("--until-idle", type=float, help="stop after this many seconds without input")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    args = ap.parse_args(argv)
    log.setup("INFO" if args.verbose else "WARNING")
    try:
        cfg = load_config(args.config, overrides={"state_dir": args.state_dir})
        return run_stream(cfg, master="submit", trigger=args.trigger,
                          archive_trigger=args.archive_trigger, until_idle_s=args.until_idle)
    except TallyError as exc:
        print(f"tally stream: error: {exc}", file=sys.stderr)
        return 1


def _duration(text: str | None) -> str | None:
    """'2s' -> '2 seconds' (Spark's interval form); other forms pass through."""
    if not text:
        return None
    from schemas.durations import parse_duration_ms

    return f"{parse_duration_ms(text)} milliseconds"


if __name__ == "__main__":
    sys.exit(main())
