"""S6 role: the position manager's HandlerSpec (registry entry ``s6``)."""

from __future__ import annotations

from chimera.handlers.positions.core import handle, pos_id_of
from chimera.schemas.messages import OrderResult, VenueReport
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec


def _streams(_settings) -> list[str]:
    return [keys.ORD_RESULTS, keys.POS_COMMANDS, keys.VENUE_REPORTS]


def _lock(env) -> str | None:
    p = env.payload
    if isinstance(p, OrderResult):
        return keys.lock_pos(pos_id_of(p))
    if isinstance(p, VenueReport):
        # The pos_id needs a store read; the close is a compare-and-set on the position's state, so a
        # report racing an OrderResult for the same position closes it once (the loser retries, sees CLOSED).
        return keys.lock_pos(f"venue:{p.client_order_id}")
    return "lock:{pos}:__tick__"


SPEC = HandlerSpec(role="s6", handle=handle, streams=_streams, lock=_lock,
                   description="S6 position manager: exchange-side stops on entry fills, closes, FLATTEN")
