"""Tally's tests; what every test process shares."""

import os

# JVM flags of every Spark session the tests start, their own and the jobs' (tests/conftest.py,
# tests/integration/speedkit.py): the tests' runs are short, and C1 only with the serial
# collector starts faster and spends less of two cores on compiling.
SPARK_JAVA_OPTIONS = os.environ.get("TEST_SPARK_JAVA_OPTIONS",
                                    "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
# The Spark settings of the tests' own sessions (tests/conftest.py).
TEST_SPARK = {"master": "local[2]", "driver_memory": "1g", "shuffle_partitions": 2,
              "java_options": SPARK_JAVA_OPTIONS}
