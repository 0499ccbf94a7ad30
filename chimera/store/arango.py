"""Production document store: ArangoDB through python-arango.

``arangodb://user:pass@host:8529/dbname`` (``arangodbs://`` for TLS). Each operation is one
AQL statement or document call, so compare-and-set is atomic on the server.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

import msgspec

from chimera.store.base import Where, check_where
from chimera.store.collections import INDEXES

_AQL_OPS = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "in": "IN"}


def _clean(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("_id", "_rev", "_fence")}


class ArangoDocumentStore:
    def __init__(self, url: str) -> None:
        from arango import ArangoClient

        u = urlparse(url)
        scheme = "https" if u.scheme == "arangodbs" else "http"
        self._client = ArangoClient(hosts=f"{scheme}://{u.hostname}:{u.port or 8529}")
        dbname = (u.path or "/chimera").strip("/") or "chimera"
        user, password = unquote(u.username or "root"), unquote(u.password or "")
        sys_db = self._client.db("_system", username=user, password=password)
        if not sys_db.has_database(dbname):
            sys_db.create_database(dbname)
        self.db = self._client.db(dbname, username=user, password=password)
        self._colls: dict[str, object] = {}

    def _c(self, coll: str):
        c = self._colls.get(coll)
        if c is None:
            if not coll.replace("_", "").isalnum():
                raise ValueError(f"invalid collection name {coll!r}")
            c = self.db.collection(coll) if self.db.has_collection(coll) else self.db.create_collection(coll)
            for fields in INDEXES.get(coll, ()):
                c.add_persistent_index(fields=list(fields))  # idempotent: an existing index is returned
            self._colls[coll] = c
        return c

    @staticmethod
    def _plain(doc: dict) -> dict:
        return msgspec.to_builtins(doc)

    def get(self, coll, key):
        doc = self._c(coll).get(key)
        return _clean(doc) if doc else None

    def insert_if_absent(self, coll, key, doc) -> bool:
        from arango.exceptions import DocumentInsertError

        try:
            self._c(coll).insert({**self._plain(doc), "_key": key})
            return True
        except DocumentInsertError as exc:
            if exc.error_code == 1210:  # unique constraint violated
                return False
            raise

    def upsert(self, coll, key, doc) -> None:
        self._c(coll).insert({**self._plain(doc), "_key": key}, overwrite=True, overwrite_mode="replace")

    def update_if(self, coll, key, patch, expect) -> bool:
        filters, bind = self._filters(expect)
        cursor = self.db.aql.execute(
            f"FOR d IN @@c FILTER d._key == @k {filters} UPDATE d WITH @patch IN @@c RETURN 1",
            bind_vars={"@c": self._c(coll).name, "k": key, "patch": self._plain(patch), **bind},
        )
        return len(list(cursor)) == 1

    def put_fenced(self, coll, key, doc, fence) -> bool:
        cursor = self.db.aql.execute(
            "UPSERT {_key: @k} INSERT MERGE(@doc, {_key: @k, _fence: @f}) "
            "UPDATE (OLD._fence == null || @f >= OLD._fence) ? MERGE(@doc, {_fence: @f}) : {} "
            "IN @@c RETURN (OLD == null || @f >= OLD._fence)",
            bind_vars={"@c": self._c(coll).name, "k": key, "doc": self._plain(doc), "f": fence},
        )
        return bool(next(iter(cursor), False))

    def _filters(self, where: Where | None) -> tuple[str, dict]:
        parts, bind = [], {}
        for i, (field, op, value) in enumerate(check_where(where)):
            parts.append(f"FILTER d.`{field}` {_AQL_OPS[op]} @v{i}")
            bind[f"v{i}"] = list(value) if op == "in" else value
        return " ".join(parts), bind

    def query(self, coll, where=None, order_by=None, limit=None, desc=False):
        filters, bind = self._filters(where)
        sort = ""
        if order_by:
            check_where({order_by: None})
            sort = f"SORT d.`{order_by}` {'DESC' if desc else 'ASC'}, d._key"
        else:
            sort = "SORT d._key"
        lim = f"LIMIT {int(limit)}" if limit is not None else ""
        cursor = self.db.aql.execute(
            f"FOR d IN @@c {filters} {sort} {lim} RETURN d", bind_vars={"@c": self._c(coll).name, **bind}
        )
        return [_clean(d) for d in cursor]

    def count(self, coll, where=None) -> int:
        filters, bind = self._filters(where)
        cursor = self.db.aql.execute(
            f"RETURN LENGTH(FOR d IN @@c {filters} RETURN 1)", bind_vars={"@c": self._c(coll).name, **bind}
        )
        return next(iter(cursor))

    def delete(self, coll, key) -> bool:
        return bool(self._c(coll).delete(key, ignore_missing=True))

    def ensure_index(self, coll, fields) -> None:
        self._c(coll).add_persistent_index(fields=list(fields))

    def close(self) -> None:
        self._client.close()
