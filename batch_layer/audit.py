"""The strong audit: the speed views of a day against its published (exact) batch view.

Per event type: the events the speed layer missed and over-counted (totals and share of the
batch count), the same for ``watch_ms``, and the worst minute buckets. The speed layer is exact
for on-time events; it leaves out only events behind its watermark and events stamped ahead of
the receiving clock, and counts both per UTC day of their event time. So the whole difference of
a day is *explained* when the speed views never exceed the batch view and what they miss is no
more than that day's two counters (plus any late rows the stream could not give a day, reported
as such).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from schemas.granularity import DAY_MS
from speed_layer import open_speed_views
from batch_layer.views import BatchViews
from schemas.config import TallyConfig
from schemas.errors import TallyError



def _ms(t) -> int:
    return int(t.timestamp() * 1000)


def audit_day(cfg: TallyConfig, day: dt.date, worst: int = 5) -> dict[str, Any]:
    views = BatchViews(cfg)
    entry = views.current(day.isoformat())
    if entry is None:
        raise TallyError(f"--date {day}: no published batch view (run `tally batch --date {day}`)")
    batch: dict[str, dict[tuple[str, int], tuple[int, int]]] = {t: {} for t in cfg.events.types}
    for r in views.read(entry, "minute").to_pylist():
        batch.setdefault(r["event_type"], {})[(r["video_id"], _ms(r["bucket_start"]))] = (r["count"], r["watch_ms"])
    store = open_speed_views(cfg)
    start = _ms(dt.datetime.combine(day, dt.time(), dt.timezone.utc))
    progress = store.progress()
    counters = store.day_counters(day.isoformat())
    late, ahead = counters.dropped_late, counters.ahead_of_clock
    unattributed = progress.late_unattributed if progress else 0
    record = progress.record if progress else {}
    dropped = late + ahead + unattributed
    expired_before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=cfg.hbase.speed_ttl_days)
    types: dict[str, Any] = {}
    tot = {"batch": 0, "speed": 0, "missed": 0, "over": 0, "batch_watch": 0, "missed_watch": 0, "over_watch": 0}
    for t in cfg.events.types:
        speed = {(m.video_id, m.minute_ms): (m.count, m.watch_ms)
                 for m in store.scan_type_minutes(t, start, start + DAY_MS)}
        b = batch.get(t, {})
        rows = []
        for key in b.keys() | speed.keys():
            bc, bw = b.get(key, (0, 0))
            sc, sw = speed.get(key, (0, 0))
            rows.append((key, bc, sc, bw, sw))
        f = {
            "batch_events": sum(r[1] for r in rows), "speed_events": sum(r[2] for r in rows),
            "missed": sum(max(r[1] - r[2], 0) for r in rows),
            "over_counted": sum(max(r[2] - r[1], 0) for r in rows),
            "batch_watch_ms": sum(r[3] for r in rows), "speed_watch_ms": sum(r[4] for r in rows),
            "missed_watch_ms": sum(max(r[3] - r[4], 0) for r in rows),
            "over_counted_watch_ms": sum(max(r[4] - r[3], 0) for r in rows),
        }
        f["missed_share"] = round(f["missed"] / f["batch_events"], 6) if f["batch_events"] else 0.0
        f["over_counted_share"] = round(f["over_counted"] / f["batch_events"], 6) if f["batch_events"] else 0.0
        rows.sort(key=lambda r: (-abs(r[1] - r[2]), r[0]))
        f["worst_buckets"] = [
            {"video_id": k[0], "minute": _iso(k[1]), "batch": bc, "speed": sc, "difference": sc - bc}
            for k, bc, sc, _bw, _sw in rows[:worst] if bc != sc]
        types[t] = f
        for name, key in (("batch", "batch_events"), ("speed", "speed_events"), ("missed", "missed"),
                          ("over", "over_counted"), ("batch_watch", "batch_watch_ms"),
                          ("missed_watch", "missed_watch_ms"), ("over_watch", "over_counted_watch_ms")):
            tot[name] += f[key]
    reasons = []
    if tot["over"] or tot["over_watch"]:
        reasons.append(f"the speed views over-count {tot['over']} events / {tot['over_watch']} watch_ms "
                       f"(more than the batch view; was the batch computed before all raw events "
                       f"were archived? input listed {entry.input.listed_at})")
    if tot["missed"] > dropped:
        reasons.append(f"the speed views miss {tot['missed']} events, more than the day's counters "
                       f"explain ({late} dropped as late, {ahead} ahead of the clock"
                       + (f", {unattributed} dropped late on no known day" if unattributed else "")
                       + ")")
    day_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    if day_end < expired_before and tot["speed"] == 0:
        reasons.append(f"the day is older than the speed views' retention "
                       f"({cfg.hbase.speed_ttl_days} days): nothing to compare")
    return {
        "day": day.isoformat(), "batch_version": entry.version, "batch_computed_at": entry.computed_at,
        "speed_progress": {k: record[k] for k in ("batch_id", "max_event_time", "watermark", "updated_at")
                           if k in record},
        "dropped_late_counter": late,
        "ahead_of_clock_counter": ahead,
        "late_unattributed": unattributed,
        "events": {"batch": tot["batch"], "speed": tot["speed"], "missed": tot["missed"],
                   "over_counted": tot["over"],
                   "missed_share": round(tot["missed"] / tot["batch"], 6) if tot["batch"] else 0.0},
        "watch_ms": {"batch": tot["batch_watch"], "missed": tot["missed_watch"], "over_counted": tot["over_watch"]},
        "explained": not reasons,
        "explanation": ("every difference is events the speed layer left out and counted for the "
                        "day (late, or ahead of the clock) — its documented approximation"
                        if not reasons else "; ".join(reasons)),
        "event_types": types,
    }


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(report: dict[str, Any]) -> str:
    lines = [f"audit {report['day']}: batch version {report['batch_version']} "
             f"(computed {report['batch_computed_at']}) against the speed views",
             f"{'event type':<10} {'batch':>10} {'speed':>10} {'missed':>8} {'share':>8} {'over':>6}"]
    for t, f in report["event_types"].items():
        lines.append(f"{t:<10} {f['batch_events']:>10,} {f['speed_events']:>10,} {f['missed']:>8,} "
                     f"{f['missed_share']:>8.2%} {f['over_counted']:>6,}")
        for w in f["worst_buckets"][:3]:
            lines.append(f"{'':<10}   worst: {w['video_id']} {w['minute']} batch {w['batch']} "
                         f"speed {w['speed']}")
    e = report["events"]
    lines.append(f"{'all':<10} {e['batch']:>10,} {e['speed']:>10,} {e['missed']:>8,} "
                 f"{e['missed_share']:>8.2%} {e['over_counted']:>6,}")
    lines.append(f"day counters: {report['dropped_late_counter']:,} dropped as late, "
                 f"{report['ahead_of_clock_counter']:,} ahead of the clock; "
                 f"{'EXPLAINED' if report['explained'] else 'NOT EXPLAINED'}: {report['explanation']}")
    return "\n".join(lines)
