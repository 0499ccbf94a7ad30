"""The DocumentStore and ObjectStore ports. Backends are chosen by URL (``open_store``).

Documents are JSON-able dicts keyed by ``_key`` (the spec's idempotency key), so a replayed
message rewrites the same document. Filters are equality on top-level fields, or an
``(op, value)`` tuple with op in ``== != < <= > >= in``.
"""

from __future__ import annotations

from typing import Any, Protocol

Where = dict[str, Any]
OPS = ("==", "!=", "<", "<=", ">", ">=", "in")


class DocumentStore(Protocol):
    def get(self, coll: str, key: str) -> dict | None: ...

    def insert_if_absent(self, coll: str, key: str, doc: dict) -> bool:
        """True if inserted, False if a document with that key already exists (left untouched)."""

    def upsert(self, coll: str, key: str, doc: dict) -> None:
        """Replace the whole document (or create it)."""

    def update_if(self, coll: str, key: str, patch: dict, expect: Where) -> bool:
        """Merge ``patch`` into the document only if every ``expect`` condition holds now.

        The compare-and-set behind state-machine transitions (expect={"state": "ACTIVE"}) and
        version bumps (expect={"version": 3}). False if the document is missing or differs.
        """

    def put_fenced(self, coll: str, key: str, doc: dict, fence: int) -> bool:
        """Write ``doc`` only if ``fence`` is >= the fencing token stored with it.

        A lock holder whose lock expired carries an older token than the new holder, so its
        late write is refused (ARCHITECTURE §2.5).
        """

    def query(self, coll: str, where: Where | None = None, order_by: str | None = None,
              limit: int | None = None, desc: bool = False) -> list[dict]: ...

    def count(self, coll: str, where: Where | None = None) -> int: ...

    def delete(self, coll: str, key: str) -> bool: ...

    def ensure_index(self, coll: str, fields: list[str]) -> None: ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes:
        """Raises KeyError if absent."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...


def check_where(where: Where | None) -> list[tuple[str, str, Any]]:
    out = []
    for field, cond in (where or {}).items():
        if not field.replace("_", "").isalnum():
            raise ValueError(f"invalid field name {field!r}")
        op, value = cond if isinstance(cond, tuple) else ("==", cond)
        if op not in OPS:
            raise ValueError(f"invalid operator {op!r} for field {field!r}; use one of {OPS}")
        out.append((field, op, value))
    return out


def matches(doc: dict, where: Where | None) -> bool:
    """Reference semantics of a filter (used by backends that cannot push it down)."""
    for field, op, value in check_where(where):
        have = doc.get(field)
        if op == "in":
            if have not in value:
                return False
        elif op in ("==", "!="):
            if (have == value) != (op == "=="):
                return False
        else:
            if have is None:
                return False
            ok = {"<": have < value, "<=": have <= value, ">": have > value, ">=": have >= value}[op]
            if not ok:
                return False
    return True
