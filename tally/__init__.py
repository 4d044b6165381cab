"""Tally: exact and fresh event counts on a Lambda architecture (Kafka, Spark, HBase, S3)."""

from pathlib import Path

__version__ = "0.1.0"

# The checkout (or installed source tree) that holds infra/, jobs/ and the packages.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
