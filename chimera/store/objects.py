"""ObjectStore backends: a local directory (default) and MinIO/S3 via the ``minio`` client."""

from __future__ import annotations

import io
import os
from pathlib import Path
from urllib.parse import unquote, urlparse


class LocalObjectStore:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"object key {key!r} escapes the store")
        return path

    def put(self, key, data, content_type="application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see a half-written object

    def get(self, key) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key) -> bool:
        return self._path(key).is_file()

    def list(self, prefix="") -> list[str]:
        root = self.root.resolve()
        keys = (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key) -> None:
        self._path(key).unlink(missing_ok=True)


class MinioObjectStore:
    """``minio://access:secret@host:9000/bucket`` (``minios://`` for TLS)."""

    def __init__(self, url: str) -> None:
        from minio import Minio

        u = urlparse(url)
        self.bucket = (u.path or "/chimera").strip("/") or "chimera"
        self.client = Minio(
            f"{u.hostname}:{u.port or 9000}",
            access_key=unquote(u.username or ""),
            secret_key=unquote(u.password or ""),
            secure=u.scheme in ("minios", "s3"),
        )
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def put(self, key, data, content_type="application/octet-stream") -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get(self, key) -> bytes:
        from minio.error import S3Error

        try:
            resp = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise KeyError(key) from None
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, key) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise

    def list(self, prefix="") -> list[str]:
        return sorted(o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True))

    def delete(self, key) -> None:
        self.client.remove_object(self.bucket, key)
