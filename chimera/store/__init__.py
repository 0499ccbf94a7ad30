"""Storage chosen by URL."""

from __future__ import annotations

from urllib.parse import urlparse

from chimera.store.base import DocumentStore, ObjectStore


def open_store(url: str) -> DocumentStore:
    u = urlparse(url)
    if u.scheme == "memory" or url in ("sqlite://:memory:", "sqlite:///:memory:"):
        from chimera.store.sqlite import SQLiteDocumentStore

        return SQLiteDocumentStore(":memory:")
    if u.scheme == "sqlite":
        from chimera.store.sqlite import SQLiteDocumentStore

        # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else u.path
        return SQLiteDocumentStore(path)
    if u.scheme in ("arangodb", "arangodbs"):
        from chimera.store.arango import ArangoDocumentStore

        return ArangoDocumentStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///path or arangodb://host:8529/db")


def open_objects(url: str) -> ObjectStore:
    u = urlparse(url)
    if u.scheme == "file":
        from chimera.store.objects import LocalObjectStore

        return LocalObjectStore((u.netloc + u.path) if u.netloc else u.path)
    if u.scheme in ("minio", "minios", "s3"):
        from chimera.store.objects import MinioObjectStore

        return MinioObjectStore(url)
    raise ValueError(f"unsupported objects URL {url!r}: use file:///dir or minio://key:secret@host:9000/bucket")


__all__ = ["DocumentStore", "ObjectStore", "open_objects", "open_store"]
