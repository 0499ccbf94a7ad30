"""Replaying a stream from an id: printing, or rewinding a consumer group."""

from __future__ import annotations

import msgspec

from chimera.schemas.envelope import decode, to_builtins
from chimera.streams import keys

_json = msgspec.json.Encoder(decimal_format="string")


def _exclusive(entry_id: str) -> str:
    return entry_id if entry_id in ("-", "0", "0-0") else f"({entry_id}"


def print_range(r, stream: str, from_id: str, to_id: str | None = None, batch: int = 500):
    start = _exclusive(from_id)
    while True:
        entries = r.xrange(stream, min=start, max=to_id or "+", count=batch)
        for entry_id, fields in entries:
            eid = entry_id.decode()
            try:
                env = decode(fields, eid, stream)
                row = {f: getattr(env, f) for f in env.__struct_fields__}
                yield _json.encode(to_builtins(row)).decode()
            except Exception as exc:
                yield _json.encode({"entry_id": eid, "undecodable": str(exc)}).decode()
        if len(entries) < batch:
            return
        start = f"({entries[-1][0].decode()}"


def rewind_group(r, stream: str, group: str, from_id: str, rehandle: bool = True, idem=None) -> int:
    """Move ``group`` back to ``from_id``; its workers get every later entry again.

    ``rehandle`` forgets the entries' done-markers, named by ``idem`` (the role's route table:
    ``HandlerSpec.idempotency``) or else by the envelope's idempotency key.
    """
    groups = {g["name"].decode() for g in r.xinfo_groups(stream)} if r.exists(stream) else set()
    if group not in groups:
        raise ValueError(f"group {group!r} does not exist on {stream!r} (known: {sorted(groups) or 'none'})")
    entries = r.xrange(stream, min=_exclusive(from_id), max="+")
    if rehandle:
        pipe = r.pipeline(transaction=False)
        for _entry_id, fields in entries:
            try:
                env = decode(fields)
                marker = idem(env) if idem is not None else env.idempotency_key
                if marker:
                    pipe.delete(keys.idem_key(group, marker))
            except Exception:
                continue
        pipe.execute()
    r.xgroup_setid(stream, group, id=from_id)
    return len(entries)
