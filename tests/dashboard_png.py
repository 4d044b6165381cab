"""Regenerate docs/dashboard.png, the picture of the dashboard in docs/serving.md (``make
dashboard-png``), from a world built with the test kits.

Needs the local stack (``tally stack up``). Makes a throw-away installation of its own (HBase
tables ``dashshot_*``, topic ``dashshot.events``, a lake in a temporary directory), fills it with
three generated days (the first two published as batch views, the last one in the speed
views), serves the app on a free port and photographs the page in headless Chromium at the
last three days by hour. The tables are dropped again at the end.

    PYTHONPATH=. python tests/dashboard_png.py [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout

from schemas.config import load_config  # noqa: E402
from schemas.event import format_ms  # noqa: E402
from tests.cdp import Browser  # noqa: E402
from tests.integration.speedkit import make_installation  # noqa: E402
from tests.integration.servekit import DAY, build_published_world, day_ms, serving  # noqa: E402

PREFIX = "dashshot"


def drop_tables(cfg) -> None:
    import happybase

    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port, timeout=180_000)  # disable: slow
    try:
        for name in (cfg.hbase.speed_table, cfg.hbase.top_table, cfg.hbase.meta_table):
            if name.encode() in conn.tables():
                conn.delete_table(name, disable=True)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "dashboard.png"))
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--videos", type=int, default=300)
    args = ap.parse_args(argv)

    base = load_config()
    first = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=3)
    with tempfile.TemporaryDirectory(prefix="tally-dashshot-") as tmp:
        drop_tables(base.replace(hbase={"table_prefix": PREFIX}))  # nothing from an earlier run
        inst = make_installation(base, Path(tmp), PREFIX, TALLY_BATCH__HORIZON_START=first.isoformat(),
                                 TALLY_HBASE__TABLE_PREFIX=PREFIX,
                                 TALLY_KAFKA__TOPIC=f"{PREFIX}.events",
                                 TALLY_KAFKA__DLQ_TOPIC=f"{PREFIX}.events.dlq")
        try:
            world = build_published_world(inst, first, days=3, batch_days=2,
                                          events=args.events, videos=args.videos, seed=5)
            from speed_layer.store import HBaseSpeedStore

            last = max(m for _v, _t, m in world.truth) + 60_000
            HBaseSpeedStore(inst.cfg).write_progress({  # as the stream would have left it
                "max_event_time": format_ms(last), "watermark": format_ms(last - 600_000),
                "updated_at": format_ms(last + 5_000), "dropped_late": 0})
            from serving_layer.app import create_app

            lo = day_ms(first)
            query = urllib.parse.urlencode({"from": format_ms(lo), "to": format_ms(lo + 3 * DAY),
                                            "granularity": "hour"})
            with serving(create_app(inst.cfg)) as url, Browser(width=1200, height=820) as b:
                b.navigate(f"{url}/?{query}")
                b.wait_for("window.tally.seq >= 1")
                if b.evaluate("window.tally.error"):
                    raise SystemExit(f"the page shows an error: {b.evaluate('window.tally.error')}")
                out = b.screenshot(args.out)
            print(f"{out}: {world.videos[0]} and the top list, horizon {format_ms(world.horizon_ms)}")
        finally:
            drop_tables(inst.cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
