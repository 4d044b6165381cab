"""Thin spark-submit entry points for the Spark jobs."""
