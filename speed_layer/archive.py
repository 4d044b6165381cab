"""Writing the raw archive: Spark's Parquet file sink, partitioned by event date and hour.

The sink commits each micro-batch's files in its ``_spark_metadata`` log, which is what the batch
layer reads (never a directory listing). Used by the streaming job's ``archive`` query and by
``tally archive import``, which loads archive-format Parquet files (for example from
``tally generate --archive-out``) through the same sink.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from schemas.archive import (
    ARCHIVE_COLUMNS, ARCHIVE_KEY, ARCHIVE_PARTITION_COLUMNS, IMPORTS_KEY, spark_schema,
)
from adapters import log
from adapters.lake import spark_uri
from schemas.config import TallyConfig
from schemas.errors import TallyError

def archive_uri(cfg: TallyConfig) -> str:
    return spark_uri(f"{cfg.lake_uri}/{ARCHIVE_KEY}")


def write_stream(rows, cfg: TallyConfig, checkpoint: Path, name: str = "archive",
                 path: str | None = None):
    """A ``DataStreamWriter`` (to be started) of archive rows into a file sink: the archive's, or
    ``path``. A sink directory has exactly one writing query: the sink's log is keyed by the
    query's batch ids, and a second query's batch 0 would be skipped as already committed."""
    return (rows.writeStream.queryName(name).format("parquet")
            .partitionBy(*ARCHIVE_PARTITION_COLUMNS)
            .option("path", path or archive_uri(cfg))
            .option("checkpointLocation", str(checkpoint))
            # Entries of files older than this are dropped from the sink's own log when Spark
            # compacts it (the files stay; the archive's index and the compaction manifests
            # keep them).
            .option("retention", f"{cfg.archive.sink_retention_ms}ms"))


class ArchiveSinkInUse(TallyError):
    """The archive's sink already holds batches of a query whose checkpoint is not this one."""


def check_sink_owner(cfg: TallyConfig, checkpoint: Path) -> None:
    """Refuse to start the archive query on a fresh checkpoint when the sink already has batches:
    its batch 0.. would be skipped as "already committed" and those records never archived."""
    commits = checkpoint / "commits"
    fresh = not commits.is_dir() or not any(p.name.isdigit() for p in commits.iterdir())
    if not fresh:
        return
    from adapters.lake import lake_store

    store = lake_store(cfg)
    if any(k.rsplit("/", 1)[-1].split(".")[0].isdigit()
           for k in store.list(f"{ARCHIVE_KEY}/_spark_metadata/")):
        raise ArchiveSinkInUse(
            f"the archive {archive_uri(cfg)} already holds batches written with another checkpoint "
            f"than {checkpoint} (was the checkpoint deleted?). Spark's file sink would skip this "
            f"query's first batches as already committed. Restore the checkpoint, or move the "
            f"directory {ARCHIVE_KEY} to {IMPORTS_KEY}/<name> in the lake (the batch layer reads "
            f"every sink there) and start again.")


def import_files(spark, cfg: TallyConfig, staging: str) -> int:
    """Load archive-format Parquet files (without the partition columns) from ``staging`` into the
    archive, once, through a file sink of its own under ``raw/imports/<id>`` (the batch layer
    reads every sink's log); returns the rows loaded."""
    import datetime as dt

    from pyspark.sql import functions as F

    schema = spark_schema(tuple(c for c in ARCHIVE_COLUMNS if c.name not in ARCHIVE_PARTITION_COLUMNS))
    source = spark_uri(staging)
    rows = (spark.readStream.schema(schema).parquet(source)
            .withColumn("event_date", F.to_date("ts")).withColumn("event_hour", F.hour("ts")))
    ident = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    target = spark_uri(f"{cfg.lake_uri}/{IMPORTS_KEY}/{ident}")
    checkpoint = cfg.state_path / "checkpoints" / f"import-{ident}"
    query = (write_stream(rows, cfg, checkpoint, name="archive-import", path=target)
             .trigger(availableNow=True).start())
    query.awaitTermination()
    from adapters.lake import lake_store
    from speed_layer import archive_index

    archive_index.sync(cfg, lake_store(cfg), sinks=[f"{IMPORTS_KEY}/{ident}"], by="import")
    loaded = spark.read.schema(schema).parquet(source).count()
    log.progress(f"archive import: {loaded:,} rows from {staging} into {target}")
    return loaded
