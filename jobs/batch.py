"""spark-submit entry point of the batch layer: the nightly run, one day, or a range of days,
recomputed from the raw archive and published atomically.

    spark-submit --jars <connector jars> jobs/batch.py [--config FILE] [--json]        the nightly run
    spark-submit --jars <connector jars> jobs/batch.py [--config FILE] --date D [--force]
    spark-submit --jars <connector jars> jobs/batch.py [--config FILE] --from D1 --to D2 [--allow-shrink] [--force]

The same as `tally batch` and `tally reprocess`; the SparkSession is built here, at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass


def parse_day(text: str, option: str) -> dt.date:
    from schemas.errors import ConfigError

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: must be a UTC day as YYYY-MM-DD, got {text!r}") from None


@dataclass(frozen=True)
class BatchRequest:
    """What a batch command asks for: the nightly run (no days), one day, or a range."""

    days: tuple[dt.date, ...] = ()
    mode: str = "nightly"  # nightly | batch (--date) | reprocess
    force: bool = False
    allow_shrink: bool = False
    as_json: bool = False


def request_from(date: str | None = None, first: str | None = None, last: str | None = None,
                 force: bool = False, allow_shrink: bool = False, as_json: bool = False) -> BatchRequest:
    from batch_layer.job import days_between
    from schemas.errors import ConfigError

    if first or last:
        if not (first and last) or date:
            raise ConfigError("--from and --to go together, without --date")
        a, b = parse_day(first, "--from"), parse_day(last, "--to")
        if b < a:
            raise ConfigError("--to: must not be before --from")
        return BatchRequest(tuple(days_between(a, b)), "reprocess", force, allow_shrink, as_json)
    if allow_shrink:
        raise ConfigError("--allow-shrink: only with `tally reprocess` (--from/--to)")
    if date:
        return BatchRequest((parse_day(date, "--date"),), "batch", force, False, as_json)
    if force:
        raise ConfigError("--force: only with --date (the nightly run computes closed days only)")
    return BatchRequest((), "nightly", False, False, as_json)


def run_batch(cfg, master: str | None, req: BatchRequest) -> int:
    """Build the session, run, stop the session, print the results (a line per day, or one JSON
    line with ``--json``). Shared by ``tally batch``/``tally reprocess`` (master from the config)
    and spark-submit (its own master). Exits 0 when every day asked for was published or left as
    it was for a reason that needs nobody (unchanged, a newer version, the nightly run finding the
    archive behind), 1 when a day was refused (its input shrank, or it is not closed)."""
    from adapters.metrics import Timed
    from adapters.spark import build_session, failure, is_spark_failure
    from batch_layer.job import RunReport, not_closed_by_time, run_dates, run_nightly

    with Timed(cfg, req.mode) as run:
        early = not_closed_by_time(cfg, list(req.days)) if req.mode != "nightly" and not req.force else []
        if early and len(early) == len(req.days):  # nothing to compute: no Spark session needed
            report = RunReport(req.mode, early)
        else:
            spark = build_session(cfg, "tally-batch", master=master)
            try:
                if req.mode == "nightly":
                    report = run_nightly(spark, cfg)
                else:
                    report = run_dates(spark, cfg, list(req.days), force=req.force,
                                       allow_shrink=req.allow_shrink,
                                       skip_unchanged=req.mode == "batch", mode=req.mode)
            except Exception as exc:
                if is_spark_failure(exc):  # e.g. the lake unreachable mid-run: one line, nothing published
                    raise failure(exc, "the batch job") from None
                raise
            finally:
                spark.stop()
        describe_run(report, run)
    return _print(report, req)


def describe_run(report, run) -> None:
    """The run's metrics (:class:`adapters.metrics.RunMetrics`) from its report."""
    published = [r for r in report.results if r.published]
    run.rows_in = sum(r.raw_rows for r in report.results if r.version)
    run.rows_out = sum(sum(r.rows.values()) for r in published)
    run.days_published = len(published)
    run.days_refused = len(report.refused)
    run.versions = {r.day: r.version for r in published}
    run.outcome = "refused" if report.refused else ("ok" if published else "nothing")


def _print(report, req: BatchRequest) -> int:
    if req.as_json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        for line in report.lines():
            print(line)
    refused = report.refused
    if refused:
        print(f"tally {'reprocess' if req.mode == 'reprocess' else 'batch'}: error: not published: "
              f"{', '.join(refused)} (see above)", file=sys.stderr)
    return 1 if refused else 0


def main(argv: list[str] | None = None) -> int:
    from adapters import log
    from schemas.config import load_config
    from schemas.errors import TallyError

    ap = argparse.ArgumentParser(prog="batch")
    ap.add_argument("--config")
    ap.add_argument("--state-dir")
    ap.add_argument("--date", help="one closed UTC day (default: the nightly run)")
    ap.add_argument("--from", dest="first", help="first day of a reprocessing range")
    ap.add_argument("--to", dest="last", help="last day of a reprocessing range (inclusive)")
    ap.add_argument("--force", action="store_true",
                    help="compute a day that is not closed, or a pinned (rolled-back) one")
    ap.add_argument("--allow-shrink", action="store_true",
                    help="publish even when a day's input has fewer raw rows than before")
    ap.add_argument("--json", action="store_true", help="one JSON result line on stdout")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    ap.add_argument("--log-format", choices=["text", "json"],
                    help="log lines as logfmt text or JSON (default log_format, TALLY_LOG_FORMAT)")
    args = ap.parse_args(argv)
    log.setup("INFO" if args.verbose else "WARNING", fmt=log.initial_format(args.log_format))
    try:
        cfg = load_config(args.config, overrides={"state_dir": args.state_dir,
                                                  "log_format": args.log_format})
        log.use_format(cfg.log_format)
        req = request_from(args.date, args.first, args.last, args.force, args.allow_shrink, args.json)
        return run_batch(cfg, master="submit", req=req)
    except TallyError as exc:
        print(f"tally batch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
