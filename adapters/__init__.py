"""What every layer uses at run time: logs, the lake (S3 or files), the Spark session, the Kafka
producer and the installed tree's paths. Nothing here knows the local stack or its tooling."""
