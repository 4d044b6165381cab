"""The speed layer: Spark Structured Streaming from Kafka to HBase speed views and the raw archive (issue 3)."""
