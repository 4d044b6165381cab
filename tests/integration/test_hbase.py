"""HBase through happybase: the salted, pre-split speed table; batch puts; one range scan."""

from __future__ import annotations

import struct

import happybase

from schemas import rowkey
from schemas.rowkey import TableSpec
from tally.devstack.provision import create_table


def test_speed_table_has_one_region_per_salt(stack):
    conn = happybase.Connection(stack.hbase.host, stack.hbase.port)
    try:
        regions = conn.table(stack.hbase.speed_table).regions()
        families = conn.table(stack.hbase.speed_table).families()
    finally:
        conn.close()
    starts = sorted(r["start_key"] for r in regions)
    assert starts == [b""] + [bytes([s]) for s in range(1, stack.hbase.salt_buckets)]
    assert families[b"m"]["time_to_live"] == stack.hbase.speed_ttl_days * 86400


def test_puts_and_one_contiguous_range_scan(stack, unique):
    name = f"test_speed_{unique}"
    out = create_table(stack, TableSpec(name, (("m", 3600),), salted=True))
    assert f"regions={stack.hbase.salt_buckets}" in out
    buckets = stack.hbase.salt_buckets
    base = 29_000_000 * 60_000  # a minute in 2025
    videos = ["v1", "v10", "v100", "other"]
    pool = happybase.ConnectionPool(2, host=stack.hbase.host, port=stack.hbase.port)
    with pool.connection() as conn:
        table = conn.table(name)
        with table.batch(batch_size=500) as b:
            for v in videos:
                for etype in ("view", "like"):
                    for m in range(300):
                        key = rowkey.encode(v, etype, base + m * 60_000, buckets)
                        b.put(key, {b"m:c": struct.pack(">q", m), b"m:w": struct.pack(">q", 10 * m)})
        lo, hi = rowkey.scan_range("v1", "view", base + 100 * 60_000 + 5, base + 200 * 60_000, buckets)
        rows = list(table.scan(row_start=lo, row_stop=hi))
        # Rewriting a value with the same key keeps one version (absolute values, no increments).
        table.put(rowkey.encode("v1", "view", base, buckets), {b"m:c": struct.pack(">q", 7)})
        again = table.row(rowkey.encode("v1", "view", base, buckets))
        conn.delete_table(name, disable=True)
    decoded = [rowkey.decode(k) for k, _ in rows]
    assert [d[2] for d in decoded] == [base + m * 60_000 for m in range(100, 200)]
    assert {d[:2] for d in decoded} == {("v1", "view")}
    assert [struct.unpack(">q", r[b"m:c"])[0] for _, r in rows] == list(range(100, 200))
    assert struct.unpack(">q", again[b"m:c"])[0] == 7
