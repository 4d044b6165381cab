"""Reading published batch views (the serving layer's offline store, the audit, the tests).

Only what the publication log names is read: the files of the current version of a day, listed
in its entry, never a directory listing, so files of killed or unpublished runs are invisible.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from batch_layer.catalog import Catalog
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

    def read(self, entry: dict[str, Any], granularity: str, video_id: str | None = None,
             event_type: str | None = None):
        """The rows of one published version's view, optionally for one video and type."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        files = entry["views"][granularity]["files"]
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
