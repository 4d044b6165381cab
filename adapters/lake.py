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


def arrow_filesystem(cfg: TallyConfig, uri: str, fs=None):
    """(pyarrow filesystem, path) of a lake URI (file://, s3:// or s3a://); ``fs`` reuses one."""
    from pyarrow import fs as pafs

    from urllib.parse import unquote

    u = urlparse(uri)
    if u.scheme == "file":
        return fs or pafs.LocalFileSystem(), unquote(u.path)
    return fs or arrow_s3_filesystem(cfg), f"{u.netloc}{u.path}"


# Object access with a conditional create ----------------------------------------------------
#
# The batch layer publishes through an append-only log of small JSON objects, each created only
# if absent (S3 `If-None-Match: *`; locally a hard link, which fails when the name exists). Two
# writers racing for the same log position cannot both win, so no publication is ever lost.

class LakeStore:
    """Small objects in the lake by key (a path relative to the lake's root)."""

    uri: str

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def children(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def size(self, key: str) -> int: ...

    def url(self, key: str) -> str:
        return f"{self.uri}/{key}"


class FileLakeStore(LakeStore):
    def __init__(self, root: str):
        from pathlib import Path

        self.root = Path(urlparse(root).path)
        self.uri = self.root.as_uri()

    def _path(self, key: str):
        return self.root / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _write_temp(self, key: str, data: bytes):
        import os
        import uuid

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return path, tmp

    def put(self, key: str, data: bytes) -> None:
        import os

        path, tmp = self._write_temp(key, data)
        os.replace(tmp, path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        import os

        path, tmp = self._write_temp(key, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: complete content or none
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def children(self, prefix: str) -> list[str]:
        """The names directly under ``prefix`` (a folder), files and folders."""
        base = self._path(prefix)
        return sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete_prefix(self, prefix: str) -> int:
        import shutil

        base = self._path(prefix)
        if base.is_dir():
            n = sum(1 for p in base.rglob("*") if p.is_file())
            shutil.rmtree(base, ignore_errors=True)
            return n
        if base.is_file():
            base.unlink()
            return 1
        return 0


class S3LakeStore(LakeStore):
    def __init__(self, cfg: TallyConfig, uri: str):
        u = urlparse(uri)
        self.bucket = u.netloc
        self.prefix = u.path.strip("/")
        self.uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.client = s3_client(cfg)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        from schemas.errors import DependencyError

        try:
            return fn(*args, **kwargs)
        except ClientError:
            raise
        except BotoCoreError as exc:
            raise DependencyError("lake", f"{self.uri}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self._call(self.client.get_object, Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def put(self, key: str, data: bytes) -> None:
        self._call(self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data,
                       IfNoneMatch="*")
            return True
        except ClientError as exc:
            # 412: the key exists; 409: a concurrent conditional write to it is in flight.
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix))
        for page in self._call(lambda: list(pages)):
            out.extend(o["Key"][strip:] for o in page.get("Contents", []))
        return sorted(out)

    def children(self, prefix: str) -> list[str]:
        base = self._key(prefix.rstrip("/") + "/")
        out: set[str] = set()
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base, Delimiter="/")
        for page in self._call(lambda: list(pages)):
            out.update(p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", []))
            out.update(o["Key"][len(base):] for o in page.get("Contents", []))
        return sorted(out)

    def size(self, key: str) -> int:
        return int(self._call(self.client.head_object, Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix.rstrip("/") + "/")
        for i in range(0, len(keys), 1000):
            self._call(self.client.delete_objects, Bucket=self.bucket, Delete={
                "Objects": [{"Key": self._key(k)} for k in keys[i:i + 1000]], "Quiet": True})
        return len(keys)


def lake_store(cfg: TallyConfig, uri: str | None = None) -> LakeStore:
    """The store for the installation's lake (or another lake URI)."""
    uri = uri or cfg.lake_uri
    if uri.startswith("file://"):
        return FileLakeStore(uri)
    if uri.startswith(("s3://", "s3a://")):
        return S3LakeStore(cfg, uri)
    raise ValueError(f"lake.uri: unsupported scheme in {uri!r}")


def spark_uri(uri: str) -> str:
    """The URI Spark's Hadoop filesystem layer reads: s3:// becomes s3a://."""
    return "s3a://" + uri[len("s3://"):] if uri.startswith("s3://") else uri
