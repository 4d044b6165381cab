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


def batch_days(date: str | None, days_back: int) -> list[dt.date]:
    """``--date D`` (default yesterday), or with ``--days-back N`` the N days before today."""
    from batch_layer.job import yesterday
    from tally.errors import ConfigError

    if days_back:
        if date:
            raise ConfigError("--days-back: not with --date")
        if days_back < 0:
            raise ConfigError("--days-back: must be >= 1")
        last = yesterday()
        return [last - dt.timedelta(days=i) for i in range(days_back - 1, -1, -1)]
    return [parse_day(date, "--date") if date else yesterday()]


def run_batch(cfg, master: str | None, days: list[dt.date], skip_unchanged: bool = False,
              allow_shrink: bool = False) -> int:
    """Build the session, compute and publish each day, stop the session. Shared by ``tally
    batch``/``tally reprocess`` (master from the config) and spark-submit (its own master).
    Exits 0 when every day was published (or left as it was: unchanged input, or a newer version
    already published), 1 when a day was refused (its input shrank)."""
    from batch_layer.job import run_days
    from tally.spark import build_session, failure, is_spark_failure

    spark = build_session(cfg, "tally-batch", master=master)
    try:
        results = run_days(spark, cfg, days, skip_unchanged=skip_unchanged, allow_shrink=allow_shrink)
    except Exception as exc:
        if is_spark_failure(exc):  # e.g. the lake unreachable mid-run: one line, nothing published
            raise failure(exc, "the batch job") from None
        raise
    finally:
        spark.stop()
    for r in results:
        print(r.line())
    refused = [r.day for r in results if r.refused]
    if refused:
        print(f"tally batch: error: not published: {', '.join(refused)} (see above)", file=sys.stderr)
    return 1 if refused else 0


def main(argv: list[str] | None = None) -> int:
    from batch_layer.job import days_between
    from schemas.config import load_config
    from tally import log
    from tally.errors import TallyError

    ap = argparse.ArgumentParser(prog="batch")
    ap.add_argument("--config")
    ap.add_argument("--state-dir")
    ap.add_argument("--date", help="the UTC day (default: yesterday)")
    ap.add_argument("--from", dest="first", help="first day of a reprocessing range")
    ap.add_argument("--to", dest="last", help="last day of a reprocessing range (inclusive)")
    ap.add_argument("--days-back", type=int, default=0, metavar="N",
                    help="the nightly form: the N days before today, each recomputed only if its "
                         "archive input changed since it was published")
    ap.add_argument("--allow-shrink", action="store_true",
                    help="publish even when a day's input has fewer raw rows than its published version")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    args = ap.parse_args(argv)
    log.setup("INFO" if args.verbose else "WARNING")
    try:
        cfg = load_config(args.config, overrides={"state_dir": args.state_dir})
        if args.first or args.last:
            if not (args.first and args.last) or args.date or args.days_back:
                raise TallyError("--from and --to go together, without --date or --days-back")
            days = days_between(parse_day(args.first, "--from"), parse_day(args.last, "--to"))
            return run_batch(cfg, master="submit", days=days, allow_shrink=args.allow_shrink)
        return run_batch(cfg, master="submit", days=batch_days(args.date, args.days_back),
                         skip_unchanged=True)
    except TallyError as exc:
        print(f"tally batch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
