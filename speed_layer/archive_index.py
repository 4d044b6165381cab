"""The archive's per-day index: the UTC days with raw data and, for each, its committed files and
raw rows, plus the archive's position in the topic.

It is derived from what the archive's file sinks committed (their ``_spark_metadata`` logs) and
from the compaction manifests, and kept in the lake, so it outlives the sink log's retention.
The API, the nightly run and the raw-row guard read only this index; only :func:`sync` reads the
sink logs, and only the entries it has not indexed yet. The streaming job syncs after every
archive micro-batch, ``tally archive import`` and ``compact`` after their writes, the nightly run
before it decides what to compute; :func:`rebuild` derives it again from the committed files.

Layout under the lake (every object written once, segments with a create-if-absent write, so
concurrent writers cannot lose each other's additions)::

    raw/_index/log/NNNNNNNNNN.json           what one sync added (files, compactions, position)
    raw/_index/checkpoint/NNNNNNNNNN.json    the folded summary of segments 1..N
    raw/_index/days/date=D/NNNNNNNNNN.json   a day's files as of checkpoint N

Readers load the newest checkpoint and the few segments after it; a checkpoint is written every
:data:`CHECKPOINT_EVERY` segments and older segments are removed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from adapters import log
from adapters.lake import LakeStore
from schemas.archive import ARCHIVE_KEY, COMPACTED_KEY, IMPORTS_KEY
from schemas.errors import TallyError

LOG = log.get("archive.index")
INDEX_KEY = "raw/_index"
LOG_PREFIX = f"{INDEX_KEY}/log/"
CHECKPOINT_PREFIX = f"{INDEX_KEY}/checkpoint/"
DAYS_PREFIX = f"{INDEX_KEY}/days/"
CHECKPOINT_EVERY = 64
# Files of a sink micro-batch are written after the previous batch committed, so their
# modification times grow from batch to batch; a compacted sink log is read from this long before
# the newest time already indexed (clock skew between writers), known paths left out.
MTIME_MARGIN_MS = 3_600_000
_SEQ = re.compile(r"(\d{10})\.json$")
_SINK_LOG = re.compile(r"^(\d+)(\.compact)?$")
_DAY = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})")


class IndexError_(TallyError):
    """The index could not be read or written consistently."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class IndexedFile:
    """A data file a sink committed (or a compaction wrote): where, how big, how many rows."""

    path: str  # a full URI, as the sink recorded it
    size: int
    rows: int
    day: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "rows": self.rows, "day": self.day}

    @staticmethod
    def of(d: dict[str, Any]) -> "IndexedFile":
        return IndexedFile(d["path"], int(d["size"]), int(d["rows"]), d["day"])


@dataclass(frozen=True)
class Compaction:
    """A day's newest compaction manifest: its files stand for the sink files it covers."""

    manifest: str
    files: tuple[IndexedFile, ...]
    covered: frozenset[str]
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "files": [f.to_json() for f in self.files],
                "covered": sorted(self.covered), "rows": self.rows}

    @staticmethod
    def of(d: dict[str, Any]) -> "Compaction":
        return Compaction(d["manifest"], tuple(IndexedFile.of(f) for f in d["files"]),
                          frozenset(d["covered"]), int(d["rows"]))


@dataclass(frozen=True)
class DaySummary:
    """What the API and the nightly run need to know of a day without its file list."""

    day: str
    rows: int  # raw rows: every copy of every event the sinks committed for the day
    files: int  # sink files
    last_seq: int  # the segment that last added raw data to the day
    compacted: int  # sink files its newest compaction covers (0: none)
    detail: int  # the checkpoint holding its file list (0: none yet)
    first_commit: str = ""  # when the day's oldest sink file still uncovered was indexed

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DayFiles:
    """A day's committed sink files and its newest compaction."""

    day: str
    files: tuple[IndexedFile, ...]
    compaction: Compaction | None

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def uncovered(self) -> list[IndexedFile]:
        covered = self.compaction.covered if self.compaction else frozenset()
        return [f for f in self.files if f.path not in covered]

    def input_files(self) -> list[IndexedFile]:
        """What a reader reads for the day: the compacted files plus every sink file they do
        not cover (late arrivals since), so no row is read twice or left out."""
        return list(self.compaction.files if self.compaction else ()) + self.uncovered()

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day, "files": [f.to_json() for f in self.files],
                "compaction": self.compaction.to_json() if self.compaction else None}

    @staticmethod
    def of(d: dict[str, Any]) -> "DayFiles":
        return DayFiles(d["day"], tuple(IndexedFile.of(f) for f in d["files"]),
                        Compaction.of(d["compaction"]) if d.get("compaction") else None)


@dataclass(frozen=True)
class SinkCursor:
    """How far a sink's log is indexed: its last batch, and the newest file times seen."""

    batch: int = -1
    max_mtime: int = 0
    recent: tuple[tuple[str, int], ...] = ()  # (path, mtime) within MTIME_MARGIN_MS of max_mtime

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "max_mtime": self.max_mtime, "recent": [list(r) for r in self.recent]}

    @staticmethod
    def of(d: dict[str, Any]) -> "SinkCursor":
        return SinkCursor(int(d["batch"]), int(d["max_mtime"]),
                          tuple((p, int(m)) for p, m in d.get("recent", ())))


@dataclass(frozen=True)
class IndexState:
    """The folded index up to segment ``seq``."""

    seq: int = 0
    days: dict[str, DaySummary] = field(default_factory=dict)
    sinks: dict[str, SinkCursor] = field(default_factory=dict)
    # The archive's committed position: {"topic", "offsets": {partition: next offset}, "at"}.
    archive: dict[str, Any] | None = None
    checkpoint: int = 0

    def summary_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "days": {d: s.to_json() for d, s in sorted(self.days.items())},
                "sinks": {k: c.to_json() for k, c in sorted(self.sinks.items())},
                "archive": self.archive, "written_at": _now()}

    @staticmethod
    def of_summary(d: dict[str, Any]) -> "IndexState":
        return IndexState(int(d["seq"]), {k: DaySummary(**v) for k, v in d["days"].items()},
                          {k: SinkCursor.of(v) for k, v in d["sinks"].items()}, d.get("archive"),
                          int(d["seq"]))

    def raw_days(self) -> list[str]:
        return sorted(d for d, s in self.days.items() if s.rows > 0)


def _seq_keys(store: LakeStore, prefix: str) -> dict[int, str]:
    out = {}
    for key in store.list(prefix):
        rest = key[len(prefix):]
        if "/" in rest:
            continue
        m = _SEQ.fullmatch(rest)
        if m:
            out[int(m.group(1))] = key
    return out


def _fold(state: IndexState, segment: dict[str, Any]) -> IndexState:
    """``state`` with one more segment applied (pure)."""
    seq = int(segment["seq"])
    if segment.get("reset"):
        state = IndexState(checkpoint=state.checkpoint)
    days = dict(state.days)
    for f in segment.get("files", ()):
        d = days.get(f["day"]) or DaySummary(f["day"], 0, 0, 0, 0, 0)
        days[f["day"]] = dataclasses.replace(
            d, rows=d.rows + int(f["rows"]), files=d.files + 1, last_seq=seq,
            first_commit=d.first_commit or segment.get("created_at", ""))
    for c in segment.get("compactions", ()):
        d = days.get(c["day"]) or DaySummary(c["day"], 0, 0, 0, 0, 0)
        covered_all = d.files <= len(c["covered"])
        days[c["day"]] = dataclasses.replace(d, compacted=len(c["covered"]),
                                             first_commit="" if covered_all else d.first_commit)
    sinks = dict(state.sinks)
    for root, cur in segment.get("sinks", {}).items():
        sinks[root] = SinkCursor.of(cur)
    archive = segment.get("archive") or state.archive
    return IndexState(seq, days, sinks, archive, state.checkpoint)


def _fold_day(day: DayFiles, segment: dict[str, Any]) -> DayFiles:
    if segment.get("reset"):
        day = DayFiles(day.day, (), None)
    files = day.files + tuple(IndexedFile.of(f) for f in segment.get("files", ())
                              if f["day"] == day.day)
    compaction = day.compaction
    for c in segment.get("compactions", ()):
        if c["day"] == day.day:
            compaction = Compaction.of(c)
    return DayFiles(day.day, files, compaction)


class ArchiveIndex:
    """A reader of the index that keeps what it read: each call to :meth:`state` reads only
    the segments (and, when one appeared, the checkpoint) written since the last call."""

    def __init__(self, store: LakeStore) -> None:
        self.store = store
        self._state: IndexState | None = None
        self._tail: list[dict[str, Any]] = []  # segments after the state's checkpoint
        self._details: dict[tuple[str, int], DayFiles] = {}

    def state(self) -> IndexState:
        for _attempt in range(5):
            try:
                return self._refresh()
            except _Pruned:
                self._state, self._tail = None, []  # a writer checkpointed and pruned: reload
        raise IndexError_(f"{self.store.uri}/{INDEX_KEY}: the index kept changing while read")

    def _refresh(self) -> IndexState:
        checkpoints = _seq_keys(self.store, CHECKPOINT_PREFIX)
        newest = max(checkpoints, default=0)
        state = self._state
        if state is None or newest > state.checkpoint:
            base = IndexState()
            if newest:
                data = self.store.get(checkpoints[newest])
                if data is None:
                    raise _Pruned()
                base = IndexState.of_summary(json.loads(data))
            # Segments already read that come after the checkpoint are folded again, not re-read.
            kept = [s for s in self._tail if int(s["seq"]) > base.seq]
            state, self._tail = base, []
            for seg in kept:
                if int(seg["seq"]) != state.seq + 1:
                    break
                state = _fold(state, seg)
                self._tail.append(seg)
        logs = _seq_keys(self.store, LOG_PREFIX)
        if any(s > state.seq for s in logs) and state.seq + 1 not in logs:
            raise _Pruned()  # removed under a newer checkpoint than the one read: read again
        while state.seq + 1 in logs:
            data = self.store.get(logs[state.seq + 1])
            if data is None:
                raise _Pruned()
            seg = json.loads(data)
            state = _fold(state, seg)
            self._tail.append(seg)
        self._state = state
        return state

    def day(self, day: str, state: IndexState | None = None) -> DayFiles:
        """A day's files as of ``state`` (default: the newest state)."""
        state = state or self.state()
        summary = state.days.get(day)
        files = DayFiles(day, (), None)
        if summary is not None and summary.detail:
            key = (day, summary.detail)
            cached = self._details.get(key)
            if cached is None:
                data = self.store.get(f"{DAYS_PREFIX}date={day}/{summary.detail:010d}.json")
                if data is None:
                    raise IndexError_(f"index detail of {day} at checkpoint {summary.detail} is missing")
                cached = self._details[key] = DayFiles.of(json.loads(data))
            files = cached
        for seg in self._tail:
            if int(seg["seq"]) <= state.seq:
                files = _fold_day(files, seg)
        return files


class _Pruned(Exception):
    pass


# Reading the sinks' own logs ---------------------------------------------------------------------

def _sink_log_keys(store: LakeStore, root: str) -> dict[int, tuple[str, bool]]:
    meta = f"{root}/_spark_metadata/"
    out: dict[int, tuple[str, bool]] = {}
    for key in store.list(meta):
        m = _SINK_LOG.match(key[len(meta):])
        if m:
            out[int(m.group(1))] = (key, bool(m.group(2)))
    return out


def _read_sink_log(store: LakeStore, key: str) -> list[dict[str, Any]] | None:
    data = store.get(key)
    if data is None:  # removed by the sink's own log cleanup while we listed
        return None
    lines = data.decode().splitlines()
    if not lines or lines[0].strip() != "v1":
        raise IndexError_(f"{key}: unknown sink log version {lines[:1]!r}")
    return [json.loads(line) for line in lines[1:] if line.strip()]


def committed_entries(store: LakeStore, root: str) -> list[dict[str, Any]]:
    """Every file entry the sink's log still lists (its newest compaction plus the deltas after
    it): for :func:`rebuild` and the tests, not for the request path."""
    keys = _sink_log_keys(store, root)
    compacts = [b for b, (_k, c) in keys.items() if c]
    start = max(compacts, default=0)
    files: dict[str, dict[str, Any]] = {}
    for batch in sorted(b for b in keys if b >= start):
        for e in _read_sink_log(store, keys[batch][0]) or ():
            if e.get("action") == "delete":
                files.pop(e["path"], None)
            elif not e.get("isDir"):
                files[e["path"]] = e
    return sorted(files.values(), key=lambda e: e["path"])


def _new_sink_entries(store: LakeStore, root: str, cur: SinkCursor
                      ) -> tuple[list[dict[str, Any]], SinkCursor]:
    """The entries the sink committed after ``cur``, and the cursor after them.

    Deltas are read where they still exist; where the sink's log compaction has replaced them,
    the newest compacted log is read, from a margin before the newest file time indexed on, and
    the paths already indexed there left out."""
    keys = _sink_log_keys(store, root)
    latest = max(keys, default=-1)
    if latest <= cur.batch:
        return [], cur
    known = {p for p, _m in cur.recent}
    floor = cur.max_mtime - MTIME_MARGIN_MS
    new: dict[str, dict[str, Any]] = {}
    need_compact = False

    def take(entries: list[dict[str, Any]], from_compact: bool) -> None:
        for e in entries:
            if e.get("isDir") or e.get("action") == "delete":
                continue
            if e["path"] in known or e["path"] in new:
                continue
            if from_compact and int(e.get("modificationTime", 0)) < floor:
                continue
            new[e["path"]] = e

    for b in range(cur.batch + 1, latest + 1):
        if b not in keys:
            need_compact = True
            continue
        key, compact = keys[b]
        entries = _read_sink_log(store, key)
        if entries is None:
            need_compact = True
            continue
        take(entries, compact)
    if need_compact:
        compacts = sorted((b for b, (_k, c) in keys.items() if c and b > cur.batch), reverse=True)
        if not compacts:
            raise IndexError_(f"{root}: sink log batches after {cur.batch} are gone and no "
                              f"compacted log covers them; run `tally archive index --rebuild`")
        take(_read_sink_log(store, keys[compacts[0]][0]) or [], True)
    mtimes = dict(cur.recent)
    mtimes.update({p: int(e.get("modificationTime", 0)) for p, e in new.items()})
    top = max([cur.max_mtime, *mtimes.values()])
    recent = tuple(sorted((p, m) for p, m in mtimes.items() if m >= top - MTIME_MARGIN_MS))
    return sorted(new.values(), key=lambda e: e["path"]), SinkCursor(latest, top, recent)


def _day_of(path: str) -> str:
    from urllib.parse import unquote

    m = _DAY.search(unquote(path))
    if not m:
        raise IndexError_(f"{path}: an archive file outside an event_date=YYYY-MM-DD partition")
    return m.group(1)


class RowCounter:
    """Row counts of Parquet files from their footers (one small read per file)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self._fs: dict[str, Any] = {}

    def rows(self, uri: str) -> int:
        import pyarrow.parquet as pq

        from adapters.lake import arrow_filesystem

        scheme = uri.split("://", 1)[0]
        if scheme not in self._fs:
            self._fs[scheme] = arrow_filesystem(self.cfg, uri)[0]
        _fs, path = arrow_filesystem(self.cfg, uri, self._fs[scheme])
        return pq.read_metadata(path, filesystem=self._fs[scheme]).num_rows


def sink_roots(store: LakeStore) -> list[str]:
    """The archive's file sinks found in the lake: the streaming job's and one per import."""
    roots = set()
    if store.list(f"{ARCHIVE_KEY}/_spark_metadata/"):
        roots.add(ARCHIVE_KEY)
    for key in store.list(f"{IMPORTS_KEY}/"):
        head, sep, _ = key.partition("/_spark_metadata/")
        if sep:
            roots.add(head)
    return sorted(roots)


# Writing -------------------------------------------------------------------------------------------

def sync(cfg, store: LakeStore, *, sinks: Iterable[str] = (), compactions: Iterable[dict] = (),
         archive: dict[str, Any] | None = None, by: str = "sync",
         index: ArchiveIndex | None = None, reset: bool = False) -> IndexState:
    """Index what the sinks committed since the last sync (the sinks already indexed, the
    streaming job's, and ``sinks``), plus ``compactions`` (manifests, as :func:`compaction_entry`
    makes them) and the archive's committed position; returns the new state. Safe to run from
    several processes at once: a segment is created only if absent, and a writer that loses the
    race reads the winner's segment and tries again with what is still new."""
    index = index or ArchiveIndex(store)
    counter = RowCounter(cfg)
    compactions = list(compactions)
    rows_cache: dict[str, int] = {}
    for _attempt in range(50):
        state = index.state()
        base = IndexState(state.seq, checkpoint=state.checkpoint) if reset else state
        # An import's sink is written once (its command syncs it): only the streaming job's
        # sink, and the sinks named, are read again.
        roots = {r for r in base.sinks if not r.startswith(IMPORTS_KEY)} | set(sinks)
        if store.list(f"{ARCHIVE_KEY}/_spark_metadata/"):
            roots.add(ARCHIVE_KEY)
        files: list[dict[str, Any]] = []
        cursors: dict[str, dict[str, Any]] = {}
        for root in sorted(roots):
            entries, cur = _new_sink_entries(store, root, base.sinks.get(root, SinkCursor()))
            if cur != base.sinks.get(root):
                cursors[root] = cur.to_json()
            for e in entries:
                if e["path"] not in rows_cache:
                    rows_cache[e["path"]] = counter.rows(e["path"])
                files.append({"path": e["path"], "size": int(e["size"]), "rows": rows_cache[e["path"]],
                              "day": _day_of(e["path"]), "sink": root})
        moved = archive is not None and archive != base.archive
        if not (files or cursors or compactions or moved or reset):
            return state
        seq = state.seq + 1
        segment = {"seq": seq, "created_at": _now(), "by": by, "reset": reset, "files": files,
                   "sinks": cursors, "compactions": compactions, "archive": archive if moved else None}
        if store.put_if_absent(f"{LOG_PREFIX}{seq:010d}.json", json.dumps(segment).encode()):
            log.kv(LOG, 20, "indexed", seq=seq, by=by, files=len(files),
                   compactions=len(compactions), days=len({f["day"] for f in files}))
            new_state = index.state()
            if seq - new_state.checkpoint >= CHECKPOINT_EVERY:
                checkpoint(store, index)
            return new_state
        log.kv(LOG, 20, "index segment raced; re-reading", seq=seq)
    raise IndexError_(f"{store.uri}/{LOG_PREFIX}: could not append after 50 attempts")


def checkpoint(store: LakeStore, index: ArchiveIndex | None = None) -> IndexState:
    """Write the folded state as a checkpoint (the changed days' file lists first), then remove
    the segments and day lists that the previous checkpoint made unnecessary."""
    index = index or ArchiveIndex(store)
    state = index.state()
    if state.seq == state.checkpoint:
        return state
    previous = state.checkpoint
    changed: set[str] = set()
    for seg in index._tail:
        if seg.get("reset"):
            changed = set(state.days)
            break
        changed |= {f["day"] for f in seg.get("files", ())} | {c["day"] for c in seg.get("compactions", ())}
    days = dict(state.days)
    for d in sorted(changed):
        detail = index.day(d, state)
        store.put(f"{DAYS_PREFIX}date={d}/{state.seq:010d}.json", json.dumps(detail.to_json()).encode())
        if d in days:
            days[d] = dataclasses.replace(days[d], detail=state.seq)
    summary = dataclasses.replace(state, days=days).summary_json()
    store.put_if_absent(f"{CHECKPOINT_PREFIX}{state.seq:010d}.json", json.dumps(summary).encode())
    log.kv(LOG, 20, "index checkpoint", seq=state.seq, days=len(days), changed=len(changed))
    # What only the checkpoint before the previous one needed.
    for seq, key in _seq_keys(store, LOG_PREFIX).items():
        if seq <= previous:
            store.delete_prefix(key)
    for seq, key in _seq_keys(store, CHECKPOINT_PREFIX).items():
        if seq < previous:
            store.delete_prefix(key)
    for d in changed:
        for seq, key in _seq_keys(store, f"{DAYS_PREFIX}date={d}/").items():
            if seq < (state.days[d].detail if d in state.days and state.days[d].detail else 0):
                store.delete_prefix(key)
    return index.state()


def compaction_entry(day: str, manifest_key: str, manifest: dict[str, Any], rows_of) -> dict[str, Any]:
    """A compaction manifest as the index records it (``rows_of(uri)``: a file's row count)."""
    return {"day": day, "manifest": manifest_key, "rows": int(manifest["rows"]),
            "covered": sorted(manifest["covered"]),
            "files": [{"path": f["path"], "size": int(f["size"]), "rows": rows_of(f["path"]),
                       "day": day} for f in manifest["files"]]}


def latest_manifests(store: LakeStore) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every day's newest compaction manifest in the lake: {day: (key, manifest)}."""
    newest: dict[str, str] = {}
    for key in store.list(f"{COMPACTED_KEY}/"):
        m = re.search(r"event_date=(\d{4}-\d{2}-\d{2})/_log/(\d{10})\.json$", key)
        if m and key > newest.get(m.group(1), ""):
            newest[m.group(1)] = key
    out = {}
    for day, key in newest.items():
        data = store.get(key)
        if data is not None:
            out[day] = (key, json.loads(data))
    return out


def rebuild(cfg, store: LakeStore) -> IndexState:
    """Derive the index again from the committed files: every sink's log and every day's newest
    compaction manifest (whose covered files stand in for sink-log entries dropped by the
    sink's retention). Written as a reset segment and a checkpoint."""
    counter = RowCounter(cfg)
    index = ArchiveIndex(store)
    state = sync(cfg, store, sinks=sink_roots(store), by="rebuild", index=index, reset=True)
    listed = {f.path for d in state.days for f in index.day(d, state).files}
    extra: list[dict[str, Any]] = []
    comps = []
    for day, (key, manifest) in sorted(latest_manifests(store).items()):
        for path in manifest["covered"]:
            if path not in listed:
                extra.append({"path": path, "size": 0, "rows": counter.rows(path), "day": day,
                              "sink": "manifest"})
        comps.append(compaction_entry(day, key, manifest, counter.rows))
    if extra or comps:
        seq = index.state().seq + 1
        segment = {"seq": seq, "created_at": _now(), "by": "rebuild", "files": extra,
                   "sinks": {}, "compactions": comps, "archive": None}
        if not store.put_if_absent(f"{LOG_PREFIX}{seq:010d}.json", json.dumps(segment).encode()):
            raise IndexError_("the index changed during the rebuild; run it again")
    checkpoint(store, index)
    return index.state()
