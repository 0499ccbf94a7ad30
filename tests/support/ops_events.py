"""What the services reported on ops:events."""

from __future__ import annotations

from chimera.schemas.envelope import decode
from chimera.streams import keys


def ops_events(r, kind: str) -> list:
    """Payloads of the ``kind`` events on ops:events, oldest first."""
    return [e.payload for e in (decode(f) for _, f in r.xrange(keys.OPS_EVENTS)) if e.payload.kind == kind]
