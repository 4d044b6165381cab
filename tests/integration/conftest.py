"""Integration tests talk to the real local stack started by `make test` (`tally stack up`).

Each test owns its names (topic, table, bucket, prefix) so no test depends on another or on an
earlier run. A stack that is not healthy fails the tests with the reason; nothing is skipped.
"""
