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
    spark = build_session(cfg, "tally-stream", master=master, extra=ui_conf(cfg))
    app = StreamingApp(spark, cfg, trigger=_duration(trigger),
                       archive_trigger=_duration(archive_trigger), until_idle_s=until_idle_s)
    app.install_signal_handlers()
    server = None
    try:
        if cfg.metrics.stream_port:
            from adapters import log
            from adapters.metrics import serve

            from schemas.errors import TallyError

            try:
                server = serve(app.metrics.registry, cfg.metrics.host, cfg.metrics.stream_port)
            except OSError as exc:
                raise TallyError(f"metrics.stream_port: cannot serve /metrics on "
                                 f"{cfg.metrics.host}:{cfg.metrics.stream_port} ({exc.strerror or exc}); "
                                 "give another port, or 0 for none") from None
            log.progress(f"stream: metrics on http://{cfg.metrics.host}:{cfg.metrics.stream_port}"
                         "/metrics")
        app.start()
        if cfg.stream.ui_port:
            from adapters import log

            log.progress(f"stream: Spark UI on {spark.sparkContext.uiWebUrl or 'its port'}")
        return app.run()
    finally:
        if server is not None:
            server.shutdown()
        stop_session(spark)


def ui_conf(cfg) -> dict[str, str]:
    """The Spark UI of the streaming job on ``stream.ui_port`` (Spark tries the next ports when
    it is taken; it listens where the driver binds, ``spark.driver.bindAddress``), unless that
    is 0."""
    if not cfg.stream.ui_port:
        return {}
    return {"spark.ui.enabled": "true", "spark.ui.port": str(cfg.stream.ui_port)}


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
    ap.add_argument("--log-format", choices=["text", "json"],
                    help="log lines as logfmt text or JSON (default log_format, TALLY_LOG_FORMAT)")
    args = ap.parse_args(argv)
    log.setup("INFO" if args.verbose else "WARNING", fmt=log.initial_format(args.log_format))
    try:
        cfg = load_config(args.config, overrides={"state_dir": args.state_dir,
                                                  "log_format": args.log_format})
        log.use_format(cfg.log_format)
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
