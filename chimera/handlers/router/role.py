"""S4 role: the order router's HandlerSpec (registry entry ``s4``)."""

from __future__ import annotations

from chimera.handlers.router.core import handle
from chimera.schemas.messages import CancelOrder, SubmitOrder, TimerFired, VenueReport
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec


def _streams(_settings) -> list[str]:
    return [keys.ORD_COMMANDS, keys.ROUTER_TIMERS, keys.VENUE_REPORTS]


def _lock(env) -> str | None:
    # One intent at a time: its legs' compare-and-set writes and venue calls never interleave.
    p = env.payload
    if isinstance(p, SubmitOrder):
        return f"intent:{p.intent.intent_id}"
    if isinstance(p, CancelOrder):
        return f"intent:{p.intent_id}"
    if isinstance(p, TimerFired):
        return f"intent:{p.ref}"
    if isinstance(p, VenueReport):
        # The intent is only known after a store read; reports for one order are serialized here and
        # race the intent's own handling through the compare-and-set on the order's status.
        return f"order:{p.client_order_id}"
    return None


def _idempotency(env) -> str | None:
    # Commands and timers: None on purpose, a repeated command must re-emit the stored result (the
    # runtime's done-marker would swallow it); the handler is idempotent by intent_id. Venue reports
    # carry S1's per-trade/per-execution key.
    return env.idempotency_key if isinstance(env.payload, VenueReport) else None


SPEC = HandlerSpec(role="s4", handle=handle, streams=_streams, idempotency=_idempotency, lock=_lock,
                   description="S4 order router: SubmitOrder/CancelOrder/timers -> venue orders, ord:{results}; "
                               "venue:{reports} -> orders/fills")
