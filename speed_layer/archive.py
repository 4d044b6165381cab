"""Writing the raw archive: Spark's Parquet file sink, partitioned by event date and hour.

The sink commits each micro-batch's files in its ``_spark_metadata`` log, which is what the batch
layer reads (never a directory listing). Used by the streaming job's ``archive`` query and by
``tally archive import``, which loads archive-format Parquet files (for example from
``tally generate --archive-out``) through the same sink.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from schemas.archive import ARCHIVE_COLUMNS, ARCHIVE_KEY, ARCHIVE_PARTITION_COLUMNS, spark_schema
from schemas.config import TallyConfig
from tally import log
from tally.lake import spark_uri

# Entries of files older than this are dropped from the sink's log when Spark compacts it (the
# files stay); a closed day is read through its compaction manifest after that.
SINK_RETENTION = "30d"


def archive_uri(cfg: TallyConfig) -> str:
    return spark_uri(f"{cfg.lake_uri}/{ARCHIVE_KEY}")


def write_stream(rows, cfg: TallyConfig, checkpoint: Path, name: str = "archive"):
    """A started-to-be ``DataStreamWriter`` of archive rows into the archive's file sink."""
    return (rows.writeStream.queryName(name).format("parquet")
            .partitionBy(*ARCHIVE_PARTITION_COLUMNS)
            .option("path", archive_uri(cfg))
            .option("checkpointLocation", str(checkpoint))
            .option("retention", SINK_RETENTION))


def import_files(spark, cfg: TallyConfig, staging: str) -> int:
    """Load archive-format Parquet files (without the partition columns) from ``staging`` into the
    archive through the file sink, once; returns the rows loaded."""
    from pyspark.sql import functions as F

    schema = spark_schema(tuple(c for c in ARCHIVE_COLUMNS if c.name not in ARCHIVE_PARTITION_COLUMNS))
    rows = (spark.readStream.schema(schema).parquet(spark_uri(staging))
            .withColumn("event_date", F.to_date("ts")).withColumn("event_hour", F.hour("ts")))
    checkpoint = cfg.state_path / "checkpoints" / f"import-{uuid.uuid4().hex[:8]}"
    query = write_stream(rows, cfg, checkpoint, name="archive-import").trigger(availableNow=True).start()
    query.awaitTermination()
    loaded = sum(p["numInputRows"] for p in query.recentProgress)
    log.progress(f"archive import: {loaded:,} rows from {staging} into {archive_uri(cfg)}")
    return loaded
