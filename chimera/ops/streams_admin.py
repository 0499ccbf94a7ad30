"""Stream administration behind ``chimera streams ...``."""

from __future__ import annotations

from chimera.schemas.envelope import decode
from chimera.schemas.messages import DeadLetter
from chimera.streams import keys


def init_groups(r, settings) -> list[tuple[str, str]]:
    from chimera.workers.handler import HandlerSpec
    from chimera.workers.registry import ROLES, load_spec
    from chimera.workers.runtime import ensure_group

    done = []
    for role in ROLES:
        spec = load_spec(role.code)
        if not isinstance(spec, HandlerSpec):
            continue
        for stream in spec.streams(settings):
            ensure_group(r, stream, keys.group(spec.role))
            done.append((stream, keys.group(spec.role)))
    return done


def _scan_streams(r) -> list[str]:
    out = []
    for key in r.scan_iter(count=1000, _type="stream"):
        out.append(key.decode() if isinstance(key, bytes) else key)
    return sorted(out)


def stream_info(r) -> list[tuple]:
    rows = [("stream", "length", "group", "pending", "lag")]
    for stream in _scan_streams(r):
        length = r.xlen(stream)
        groups = r.xinfo_groups(stream)
        if not groups:
            rows.append((stream, length, "-", 0, "-"))
        for g in groups:
            rows.append((stream, length, g["name"].decode(), g["pending"], g.get("lag", "?")))
    return rows


def dlq_entries(r, count: int = 100) -> list[tuple[str, DeadLetter]]:
    out = []
    for entry_id, fields in r.xrevrange(keys.DEAD_LETTER, count=count):
        out.append((entry_id.decode(), decode(fields).payload))
    return out


def dlq_requeue(r, entry_id: str) -> str:
    entries = r.xrange(keys.DEAD_LETTER, min=entry_id, max=entry_id)
    if not entries:
        raise KeyError(entry_id)
    letter: DeadLetter = decode(entries[0][1]).payload
    new_id = r.xadd(letter.stream, letter.fields)
    r.xdel(keys.DEAD_LETTER, entry_id)
    return new_id.decode()
