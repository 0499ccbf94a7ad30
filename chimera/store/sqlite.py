"""Embedded default: one SQLite file in WAL mode, a table per collection, JSON documents.

Indexes are expression indexes on ``json_extract``; filters are pushed down to SQL.
One connection per thread (sqlite3 connections are not shareable across threads).
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

import msgspec

from chimera.store.base import Where, check_where, matches
from chimera.store.collections import INDEXES

_enc = msgspec.json.Encoder(decimal_format="string")
_dec = msgspec.json.Decoder()


def _table(coll: str) -> str:
    if not coll.replace("_", "").isalnum():
        raise ValueError(f"invalid collection name {coll!r}")
    return f"c_{coll}"


class SQLiteDocumentStore:
    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._uri = f"file:{path}"
        else:
            # Shared in-memory DB so every thread sees the same data.
            self._uri = f"file:chimera-mem-{uuid.uuid4().hex}?mode=memory&cache=shared"
        self._local = threading.local()
        self._known: set[str] = set()
        self._ddl_lock = threading.Lock()
        self._keepalive = self._conn()  # keeps a :memory: DB alive

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _ensure(self, coll: str) -> str:
        table = _table(coll)
        if coll not in self._known:
            with self._ddl_lock:
                self._conn().execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY, doc TEXT NOT NULL, fence INTEGER NOT NULL DEFAULT 0)"
                )
                self._known.add(coll)
                for fields in INDEXES.get(coll, ()):
                    self.ensure_index(coll, list(fields))
        return table

    @staticmethod
    def _load(raw: str, key: str) -> dict:
        doc = _dec.decode(raw)
        doc["_key"] = key
        return doc

    @staticmethod
    def _dump(key: str, doc: dict) -> str:
        return _enc.encode({**doc, "_key": key}).decode()

    def get(self, coll: str, key: str) -> dict | None:
        row = self._conn().execute(f"SELECT doc FROM {self._ensure(coll)} WHERE k=?", (key,)).fetchone()
        return self._load(row[0], key) if row else None

    def insert_if_absent(self, coll: str, key: str, doc: dict) -> bool:
        cur = self._conn().execute(
            f"INSERT OR IGNORE INTO {self._ensure(coll)} (k, doc) VALUES (?, ?)", (key, self._dump(key, doc))
        )
        return cur.rowcount == 1

    def upsert(self, coll: str, key: str, doc: dict) -> None:
        self._conn().execute(
            f"INSERT INTO {self._ensure(coll)} (k, doc) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET doc=excluded.doc",
            (key, self._dump(key, doc)),
        )

    def update_if(self, coll: str, key: str, patch: dict, expect: Where) -> bool:
        table = self._ensure(coll)
        conn = self._conn()
        # BEGIN IMMEDIATE serialises writers, so the compare and the set are one step.
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(f"SELECT doc FROM {table} WHERE k=?", (key,)).fetchone()
            if row is None:
                conn.execute("COMMIT")
                return False
            doc = self._load(row[0], key)
            if not matches(doc, expect):
                conn.execute("COMMIT")
                return False
            doc.update(patch)
            conn.execute(f"UPDATE {table} SET doc=? WHERE k=?", (self._dump(key, doc), key))
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def put_fenced(self, coll: str, key: str, doc: dict, fence: int) -> bool:
        cur = self._conn().execute(
            f"INSERT INTO {self._ensure(coll)} (k, doc, fence) VALUES (?, ?, ?) "
            "ON CONFLICT(k) DO UPDATE SET doc=excluded.doc, fence=excluded.fence WHERE excluded.fence >= fence",
            (key, self._dump(key, doc), fence),
        )
        return cur.rowcount == 1

    def _where_sql(self, where: Where | None) -> tuple[str, list]:
        clauses, args = [], []
        for field, op, value in check_where(where):
            expr = "k" if field == "_key" else f"json_extract(doc, '$.{field}')"
            if op == "in":
                values = list(value)
                if not values:
                    clauses.append("0")
                    continue
                clauses.append(f"{expr} IN ({','.join('?' * len(values))})")
                args.extend(values)
            elif value is None and op in ("==", "!="):
                clauses.append(f"{expr} IS {'NOT ' if op == '!=' else ''}NULL")
            else:
                sql_op = "=" if op == "==" else op
                if op == "!=":
                    clauses.append(f"({expr} IS NULL OR {expr} != ?)")
                else:
                    clauses.append(f"{expr} {sql_op} ?")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def query(self, coll, where=None, order_by=None, limit=None, desc=False) -> list[dict]:
        sql_where, args = self._where_sql(where)
        sql = f"SELECT k, doc FROM {self._ensure(coll)}{sql_where}"
        if order_by:
            check_where({order_by: None})
            expr = "k" if order_by == "_key" else f"json_extract(doc, '$.{order_by}')"
            sql += f" ORDER BY {expr} {'DESC' if desc else 'ASC'}, k"
        else:
            sql += " ORDER BY k"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._load(doc, k) for k, doc in self._conn().execute(sql, args)]

    def count(self, coll, where=None) -> int:
        sql_where, args = self._where_sql(where)
        return self._conn().execute(f"SELECT COUNT(*) FROM {self._ensure(coll)}{sql_where}", args).fetchone()[0]

    def delete(self, coll, key) -> bool:
        return self._conn().execute(f"DELETE FROM {self._ensure(coll)} WHERE k=?", (key,)).rowcount == 1

    def ensure_index(self, coll: str, fields: list[str]) -> None:
        table = self._ensure(coll)
        check_where({f: None for f in fields})
        name = f"ix_{coll}_{'_'.join(fields)}"
        cols = ", ".join(f"json_extract(doc, '$.{f}')" for f in fields)
        self._conn().execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols})")

    def explain(self, coll: str, where: Where) -> str:
        sql_where, args = self._where_sql(where)
        rows = self._conn().execute(f"EXPLAIN QUERY PLAN SELECT k FROM {self._ensure(coll)}{sql_where}", args)
        return " ".join(str(r[-1]) for r in rows)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
