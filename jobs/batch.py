"""spark-submit entry point of the batch layer: one day, or a range of days, recomputed from the
raw archive and published atomically.

    spark-submit --jars <connector jars> jobs/batch.py [--config FILE] [--date D]
    spark-submit --jars <connector jars> jobs/batch.py [--config FILE] --from D1 --to D2

The same as `tally batch` and `tally reprocess`; the SparkSession is built here, at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def parse_day(text: str, option: str) -> dt.date:
    from tally.errors import ConfigError

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: must be a UTC day as YYYY-MM-DD, got {text!r}") from None


def run_batch(cfg, master: str | None, days: list[dt.date]) -> int:
    """Build the session, compute and publish each day, stop the session. Shared by ``tally
    batch``/``tally reprocess`` (master from the config) and spark-submit (its own master).
    Exits 0 when every day was published (or a newer version already was), 1 otherwise."""
    from batch_layer.job import run_days
    from tally.spark import build_session

    spark = build_session(cfg, "tally-batch", master=master)
    try:
        results = run_days(spark, cfg, days)
    finally:
        spark.stop()
    for r in results:
        print(r.line())
    return 0


def main(argv: list[str] | None = None) -> int:
    from batch_layer.job import days_between, yesterday
    from schemas.config import load_config
    from tally import log
    from tally.errors import TallyError

    ap = argparse.ArgumentParser(prog="batch")
    ap.add_argument("--config")
    ap.add_argument("--state-dir")
    ap.add_argument("--date", help="the UTC day (default: yesterday)")
    ap.add_argument("--from", dest="first", help="first day of a reprocessing range")
    ap.add_argument("--to", dest="last", help="last day of a reprocessing range (inclusive)")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    args = ap.parse_args(argv)
    log.setup("INFO" if args.verbose else "WARNING")
    try:
        cfg = load_config(args.config, overrides={"state_dir": args.state_dir})
        if args.first or args.last:
            if not (args.first and args.last) or args.date:
                raise TallyError("--from and --to go together, without --date")
            days = days_between(parse_day(args.first, "--from"), parse_day(args.last, "--to"))
        else:
            days = [parse_day(args.date, "--date") if args.date else yesterday()]
        return run_batch(cfg, master="submit", days=days)
    except TallyError as exc:
        print(f"tally batch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
