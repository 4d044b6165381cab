"""The S3 endpoint (moto locally): Parquet written and read through pyarrow and boto3."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from adapters.lake import arrow_s3_filesystem, s3_client
from tally.devstack.provision import create_bucket


def test_parquet_round_trip(stack, unique):
    bucket = f"test-{unique}"
    create_bucket(stack, bucket)
    table = pa.table({"video_id": ["a", "b", "c"], "count": pa.array([1, 2, 3], pa.int64()),
                      "minute": pa.array([0, 60_000, 120_000], pa.timestamp("ms", tz="UTC"))})
    fs = arrow_s3_filesystem(stack)
    pq.write_table(table, f"{bucket}/views/part-0.parquet", filesystem=fs)
    assert pq.read_table(f"{bucket}/views/part-0.parquet", filesystem=fs).equals(table)

    client = s3_client(stack)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["views/part-0.parquet"]
    body = client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    assert pq.read_table(io.BytesIO(body)).equals(table)

    buf = io.BytesIO()
    pq.write_table(table.slice(1), buf)
    client.put_object(Bucket=bucket, Key="views/part-1.parquet", Body=buf.getvalue())
    both = pq.read_table(f"{bucket}/views", filesystem=fs)
    assert sorted(both.column("video_id").to_pylist()) == ["a", "b", "b", "c", "c"]
