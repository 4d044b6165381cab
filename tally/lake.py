"""Thin adapters to the lake: the file:// default and any S3 API (moto locally, S3 in production).

Credentials come from the config or the standard AWS environment, never from the repository.
"""

from __future__ import annotations

from urllib.parse import urlparse

from schemas.config import TallyConfig

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_local_endpoint(endpoint: str) -> bool:
    return (urlparse(endpoint).hostname or "") in _LOCAL_HOSTS


def s3_credentials(cfg: TallyConfig) -> dict[str, str]:
    if cfg.lake.s3_access_key:
        return {"aws_access_key_id": cfg.lake.s3_access_key,
                "aws_secret_access_key": cfg.lake.s3_secret_key}
    if cfg.lake.s3_endpoint and is_local_endpoint(cfg.lake.s3_endpoint):
        # The local moto endpoint accepts any key; these are not secrets.
        return {"aws_access_key_id": "tally-local", "aws_secret_access_key": "tally-local"}
    return {}  # the default AWS credential chain


def s3_client(cfg: TallyConfig):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=cfg.lake.s3_endpoint or None, region_name=cfg.lake.s3_region,
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2},
                      s3={"addressing_style": "path"}),
        **s3_credentials(cfg))


def arrow_s3_filesystem(cfg: TallyConfig):
    """A pyarrow S3FileSystem for the configured endpoint."""
    from pyarrow import fs

    creds = s3_credentials(cfg)
    kwargs = {"region": cfg.lake.s3_region}
    if cfg.lake.s3_endpoint:
        u = urlparse(cfg.lake.s3_endpoint)
        kwargs["endpoint_override"] = u.netloc
        kwargs["scheme"] = u.scheme
    if creds:
        kwargs["access_key"] = creds["aws_access_key_id"]
        kwargs["secret_key"] = creds["aws_secret_access_key"]
    return fs.S3FileSystem(**kwargs)
