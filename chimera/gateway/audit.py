"""The append-only, hash-chained ``audit_log`` (ARCHITECTURE §10).

Entry ``seq`` n holds ``prev`` = the SHA-256 of entry n-1 and ``hash`` = SHA-256 over its own
canonical JSON (without ``hash``). The store's insert-if-absent on the zero-padded ``seq`` is the
only serialisation: two gateways appending at once both read head n, one wins key n+1, the other
re-reads and retries, so the chain never forks. Editing, deleting or reordering any entry breaks
``verify``.
"""

from __future__ import annotations

import hashlib
import json

from chimera.store.collections import AUDIT_LOG

GENESIS = "0" * 64
SECRET_WORDS = ("password", "secret", "token", "api_key", "private")


def redact(value):
    """Copy of ``value`` with every secret-looking field replaced (audit entries and /v1/config)."""
    if isinstance(value, dict):
        return {k: ("***" if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def entry_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash" and not k.startswith("_")}  # _key, _rev: the store's
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _key(seq: int) -> str:
    return f"{seq:012d}"


def head(store) -> dict | None:
    got = store.query(AUDIT_LOG, order_by="seq", desc=True, limit=1)
    return got[0] if got else None


def append(store, *, actor: str, role: str, action: str, at_ms: int, detail: dict | None = None,
           max_tries: int = 50) -> dict:
    for _ in range(max_tries):
        last = head(store)
        seq = (last["seq"] + 1) if last else 1
        entry = {"seq": seq, "at": at_ms, "actor": actor, "role": role, "action": action,
                 "detail": redact(detail or {}), "prev": last["hash"] if last else GENESIS}
        entry["hash"] = entry_hash(entry)
        if store.insert_if_absent(AUDIT_LOG, _key(seq), entry):
            return entry
    raise RuntimeError("audit_log: could not append after many concurrent writers; retry the request")


def verify(store) -> tuple[bool, int, str]:
    """(ok, entries checked, first problem)."""
    entries = store.query(AUDIT_LOG, order_by="seq")
    prev = GENESIS
    for i, e in enumerate(entries, start=1):
        if e.get("seq") != i:
            return False, i - 1, f"entry {i}: sequence gap or reorder (found seq {e.get('seq')})"
        if e.get("prev") != prev:
            return False, i - 1, f"entry {i}: prev hash does not match entry {i - 1}"
        if entry_hash(e) != e.get("hash"):
            return False, i - 1, f"entry {i}: content does not match its hash (tampered)"
        prev = e["hash"]
    return True, len(entries), ""
