"""The batch layer's read interface: the publication log (its listing and its entries, typed)
and the published views (the serving layer's offline store, the audit, the tests).

Only what the publication log names is read: the files of the current version of a day, listed
in its entry, never a directory listing, so files of killed or unpublished runs are invisible.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Mapping

from batch_layer.catalog import LOG_KEY, Catalog
from batch_layer.entry import PublicationEntry
from schemas.archive import VIEW_COLUMNS, arrow_schema
from schemas.config import TallyConfig

VIEW_SCHEMA = arrow_schema(VIEW_COLUMNS)


def arrow_filesystem(cfg: TallyConfig, uri: str):
    """(pyarrow filesystem, path prefix) for a lake URI."""
    from adapters.lake import arrow_filesystem as fs_of

    return fs_of(cfg, uri)


class BatchViews:
    def __init__(self, cfg: TallyConfig, catalog: Catalog | None = None):
        self.cfg = cfg
        self.catalog = catalog or Catalog(cfg)
        self.fs, self.root = arrow_filesystem(cfg, self.catalog.store.uri)

    @property
    def store(self):
        """The lake store the log and the views live in (adapters.lake)."""
        return self.catalog.store

    def published_days(self) -> dict[str, int]:
        """Every day with a published version, and the position (seq) of its newest entry."""
        return self.catalog.published_days()

    def entry(self, day: str, seq: int) -> PublicationEntry | None:
        """One publication entry (immutable once written; None: not there)."""
        data = self.store.get(f"{LOG_KEY}/date={day}/{seq:010d}.json")
        return PublicationEntry.parse(json.loads(data)) if data is not None else None

    def current(self, day: str) -> PublicationEntry | None:
        record = self.catalog.current(day)
        return PublicationEntry.parse(record) if record is not None else None

    def log_entries(self) -> int:
        """How many entries the publication log holds (one listing)."""
        return len(self.store.list(f"{LOG_KEY}/"))

    def read(self, entry: PublicationEntry | Mapping[str, Any], granularity: str,
             video_id: str | None = None, event_type: str | None = None):
        """The rows of one published version's view, optionally for one video and type."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        files = PublicationEntry.of(entry).files(granularity)
        if not files:
            return VIEW_SCHEMA.empty_table()
        filters = []
        if video_id is not None:
            filters.append(("video_id", "=", video_id))
        if event_type is not None:
            filters.append(("event_type", "=", event_type))
        tables = [pq.read_table(f"{self.root}/{k}", filesystem=self.fs, schema=VIEW_SCHEMA,
                                filters=filters or None) for k in files]
        table = pa.concat_tables(tables)
        if filters:  # row-group pruning is coarse; apply the filter to the rows as well
            mask = None
            for col, _op, value in filters:
                m = pc.equal(table[col], value)
                mask = m if mask is None else pc.and_(mask, m)
            table = table.filter(mask)
        return table

    def read_day(self, day: dt.date | str, granularity: str, **kw):
        entry = self.catalog.current(str(day))
        if entry is None:
            return None
        return self.read(entry, granularity, **kw)
