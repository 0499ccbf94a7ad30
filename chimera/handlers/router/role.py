"""S4 role: the order router's HandlerSpec (registry entry ``s4``)."""

from __future__ import annotations

from chimera.handlers.router.core import handle
from chimera.schemas.messages import CancelOrder, SubmitOrder, TimerFired
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec


def _streams(_settings) -> list[str]:
    return [keys.ORD_COMMANDS, keys.ROUTER_TIMERS]


def _lock(env) -> str | None:
    # One intent at a time: its legs' compare-and-set writes and venue calls never interleave.
    p = env.payload
    if isinstance(p, SubmitOrder):
        return f"intent:{p.intent.intent_id}"
    if isinstance(p, CancelOrder):
        return f"intent:{p.intent_id}"
    if isinstance(p, TimerFired):
        return f"intent:{p.ref}"
    return None


# idempotency=None on purpose: a repeated command must re-emit the stored result, which the
# runtime's done-marker would swallow; the handler itself is idempotent by intent_id.
SPEC = HandlerSpec(role="s4", handle=handle, streams=_streams, idempotency=None, lock=_lock,
                   description="S4 order router: SubmitOrder/CancelOrder/timers -> venue orders, ord:{results}")
