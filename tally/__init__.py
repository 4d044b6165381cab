"""Tally: exact and fresh event counts on a Lambda architecture (Kafka, Spark, HBase, S3).

This package is the `tally` command; the local tooling it drives lives in `tally.devstack`."""

from schemas import __version__

__all__ = ["__version__"]
