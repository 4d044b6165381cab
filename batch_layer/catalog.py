"""The publication log of batch views: which version of each day readers see.

Layout under the lake (``views/``)::

    views/_runs/<version>/{minute,hour,day}/date=2026-11-21/part-*.parquet  a run's versions
    views/date=2026-11-21/v=<version>/{minute,hour,day}/part-*.parquet       (one-day runs before)
    views/_log/date=2026-11-21/0000000001.json                              publication entries

A version is written completely and verified before anything refers to it. Publishing appends the
next entry of the day's log with a create-if-absent write (S3 ``If-None-Match: *``, a hard link
locally): two runs racing for the same position cannot both win, so no publication is lost and a
reader always finds one complete version, the one the newest entry names. A run whose input was
listed before that of the version already published does not publish over it (a slow nightly run
cannot replace a newer reprocess). Rolling back appends an entry naming an older version again,
pinned. What the log means for readers (the horizon, pending and pinned days) is
:mod:`batch_layer.published`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from schemas.granularity import GRANULARITIES
from adapters import log
from adapters.lake import LakeStore, lake_store
from schemas.config import TallyConfig
from schemas.errors import TallyError

LOG = log.get("batch")
VIEWS_KEY = "views"
LOG_KEY = f"{VIEWS_KEY}/_log"
_ENTRY = re.compile(r"date=(\d{4}-\d{2}-\d{2})/(\d{10})\.json$")
_VERSION = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{8}$")


class PublishError(TallyError):
    """A version could not be published (or rolled back)."""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_version() -> str:
    """Sortable by creation time, unique across concurrent runs."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def version_key(day: str, version: str) -> str:
    """Where a one-day run wrote a version (the layout before runs wrote many days at once)."""
    return f"{VIEWS_KEY}/date={day}/v={version}"


RUNS_KEY = f"{VIEWS_KEY}/_runs"


def run_key(version: str) -> str:
    """Where a run writes the views of all its days: ``<run>/<granularity>/date=D/``."""
    return f"{RUNS_KEY}/{version}"


def version_prefixes(day: str, version: str) -> list[str]:
    """Every place a version of a day may have files, in either layout."""
    return [version_key(day, version)] + [f"{run_key(version)}/{g}/date={day}" for g in GRANULARITIES]


@dataclass(frozen=True)
class PublishResult:
    published: bool
    seq: int
    version: str
    reason: str = ""


class Catalog:
    def __init__(self, cfg: TallyConfig, store: LakeStore | None = None):
        self.cfg = cfg
        self.store = store or lake_store(cfg)

    # -- reading --------------------------------------------------------------------------------
    def _entry_keys(self, day: str) -> list[tuple[int, str]]:
        out = []
        for key in self.store.list(f"{LOG_KEY}/date={day}/"):
            m = _ENTRY.search(key)
            if m:
                out.append((int(m.group(2)), key))
        return sorted(out)

    def entries(self, day: str) -> list[dict[str, Any]]:
        out = []
        for _seq, key in self._entry_keys(day):
            data = self.store.get(key)
            if data is not None:
                out.append(json.loads(data))
        return out

    def entry(self, day: str, seq: int) -> dict[str, Any] | None:
        """One publication entry (immutable once written)."""
        data = self.store.get(f"{LOG_KEY}/date={day}/{seq:010d}.json")
        return json.loads(data) if data is not None else None

    def current(self, day: str) -> dict[str, Any] | None:
        keys = self._entry_keys(day)
        if not keys:
            return None
        data = self.store.get(keys[-1][1])
        return json.loads(data) if data is not None else None

    def published_days(self) -> dict[str, int]:
        """Every day with a published version, and the position of its newest entry."""
        days: dict[str, int] = {}
        for key in self.store.list(f"{LOG_KEY}/"):
            m = _ENTRY.search(key)
            if m:
                days[m.group(1)] = max(days.get(m.group(1), 0), int(m.group(2)))
        return dict(sorted(days.items()))

    # -- writing --------------------------------------------------------------------------------
    def publish(self, day: str, record: dict[str, Any], action: str = "publish",
                force: bool = False) -> PublishResult:
        """Append an entry naming ``record['version']`` as the day's published version.

        Unless ``force`` (rollback), a version whose input was listed before that of the version
        currently published is not published: the newer computation stands.
        """
        version = record["version"]
        for _attempt in range(100):
            keys = self._entry_keys(day)
            seq = keys[-1][0] + 1 if keys else 1
            current = self.current(day) if keys else None
            if current is not None and not force:
                if current["input"]["listed_at"] > record["input"]["listed_at"]:
                    return PublishResult(False, current["seq"], version,
                                         f"version {current['version']} (input listed "
                                         f"{current['input']['listed_at']}) is newer")
            entry = {**record, "day": day, "seq": seq, "action": action,
                     "published_at": now_rfc3339(),
                     "previous_version": current["version"] if current else None,
                     # A rolled-back day stays as it is until `batch --date D --force` or
                     # `reprocess` publishes it again: the nightly run leaves it alone.
                     "pinned": action == "rollback"}
            payload = json.dumps(entry, indent=1, sort_keys=True).encode()
            if self.store.put_if_absent(f"{LOG_KEY}/date={day}/{seq:010d}.json", payload):
                log.kv(LOG, 20, "published", day=day, seq=seq, version=version, action=action)
                return PublishResult(True, seq, version)
            log.kv(LOG, 20, "publish raced; re-reading the log", day=day, seq=seq)
        raise PublishError(f"{day}: could not append to the publication log after 100 attempts")

    def rollback(self, day: str) -> PublishResult:
        """Publish again the version that was current before the current one was first published."""
        entries = self.entries(day)
        if not entries:
            raise PublishError(f"--date {day}: no published version to roll back")
        current = entries[-1]["version"]
        first = next(e for e in entries if e["version"] == current)
        target = first.get("previous_version")
        if not target:
            raise PublishError(f"--date {day}: version {current} is the first published; "
                               f"there is no earlier version to roll back to")
        record = next(e for e in reversed(entries) if e["version"] == target)
        if not self._version_kept(day, record):
            raise PublishError(f"--date {day}: the earlier version {target} is no longer kept "
                               f"(batch.keep_versions = {self.cfg.batch.keep_versions})")
        keep = {k: v for k, v in record.items()
                if k not in ("seq", "action", "published_at", "previous_version", "day", "pinned")}
        return self.publish(day, keep, action="rollback", force=True)

    def _version_kept(self, day: str, entry: dict[str, Any]) -> bool:
        views = entry.get("views") or {}
        files = [k for g in views.values() for k in g.get("files", ())]
        if files:
            return bool(self.store.list(files[0]))
        if views and all(int(g.get("rows", 0)) == 0 for g in views.values()):
            return True  # an empty version has no files to keep
        return any(self.store.list(p + "/") for p in version_prefixes(day, entry["version"]))

    def cleanup(self, day: str, grace: dt.timedelta = dt.timedelta(hours=6)) -> list[str]:
        """Remove the day's versions beyond the newest ``batch.keep_versions`` published ones, and
        unpublished versions (killed or superseded runs) older than ``grace``; never the current."""
        entries = self.entries(day)
        keep: list[str] = []
        for e in reversed(entries):
            if e["version"] not in keep:
                keep.append(e["version"])
        keep = keep[:self.cfg.batch.keep_versions]
        published = {e["version"] for e in entries}
        prefix = f"{VIEWS_KEY}/date={day}/"
        versions = {k[len(prefix):].split("/", 1)[0][2:] for k in self.store.list(prefix)
                    if k[len(prefix):].startswith("v=")}
        for run in self.store.children(f"{RUNS_KEY}/"):
            if any(self.store.list(p + "/") for p in version_prefixes(day, run)[1:]):
                versions.add(run)
        now = dt.datetime.now(dt.timezone.utc)
        removed = []
        for v in sorted(versions):
            if v in keep:
                continue
            m = _VERSION.match(v)
            created = (dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
                       if m else now)
            if v in published or now - created > grace:
                for p in version_prefixes(day, v):
                    self.store.delete_prefix(p)
                removed.append(v)
        if removed:
            log.kv(LOG, 20, "removed old versions", day=day, versions=",".join(removed))
        return removed
