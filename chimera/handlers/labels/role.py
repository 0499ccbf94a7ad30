"""S7 role: label backfill (registry entry ``s7``).

Route table: ``BackfillLabels`` (gateway) and ``TimerFired`` (S7's hourly timer per horizon) on
``labels:{commands}`` → ``backfill.backfill``. One backfill per horizon at a time (lock), no done-marker:
the backfill is idempotent by itself (labels are upserts keyed ``(signal_id, h)``).
"""

from __future__ import annotations

from chimera.handlers.labels import backfill
from chimera.schemas.messages import BackfillLabels, TimerFired
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route


def _lock(env) -> str:
    p = env.payload
    h = p.h if isinstance(p, BackfillLabels) else p.data.get("h", "")
    return f"s7:backfill:{h}"


ROUTES = {
    BackfillLabels: Route(backfill.on_command, lock=_lock, idem=None),
    TimerFired: Route(backfill.on_timer, lock=_lock, idem=None),
}

SPEC = HandlerSpec(role="s7", streams=lambda _s: [keys.LABELS_COMMANDS], routes=ROUTES, on_start=backfill.on_start,
                   description="S7 label backfill: labels_12h|24h|36h, strategy_events LABEL_WRITE, labels:{ready}")


def request_backfill(h: int, request_id: str, requested_by: str = "") -> tuple[str, BackfillLabels, str]:
    """What ``POST /v1/labels/backfill?h=`` XADDs: (stream, payload, idempotency key). A bad ``h`` raises
    PermanentError naming it (the route answers 400)."""
    msg = BackfillLabels(h=backfill._horizon(h), requested_by=requested_by)
    return keys.LABELS_COMMANDS, msg, f"backfill:{msg.h}:{request_id}"
