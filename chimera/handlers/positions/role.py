"""S6 role: the position manager's HandlerSpec (registry entry ``s6``)."""

from __future__ import annotations

from chimera.handlers.positions.core import handle, pos_id_of
from chimera.handlers.positions.tick import ensure_scheduled
from chimera.schemas.messages import ManagePositions, MarkPrice, OrderResult, VenueReport
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec


def _streams(settings) -> list[str]:
    perp = [keys.mkt_stream("perp", s) for s in getattr(settings, "symbols", ()) or ()]
    return [keys.ORD_RESULTS, keys.POS_COMMANDS, keys.VENUE_REPORTS, *perp]


def _lock(env) -> str | None:
    p = env.payload
    if isinstance(p, OrderResult):
        return keys.lock_pos(pos_id_of(p))
    if isinstance(p, ManagePositions):
        return keys.lock_pos(p.pos_id) if p.pos_id else "lock:{pos}:__tick__"
    if isinstance(p, VenueReport):
        # The pos_id needs a store read: the handler takes lock:{pos}:<pos_id> itself once it knows it.
        return keys.lock_pos(f"venue:{p.client_order_id}")
    return None  # market data: a mark only fans out per-position passes (which take their locks)


def _idempotency(env) -> str:
    p = env.payload
    if isinstance(p, (OrderResult, ManagePositions, VenueReport, MarkPrice)):
        return env.idempotency_key
    return ""  # book/trade/kline messages: skipped, no marker worth writing


SPEC = HandlerSpec(role="s6", handle=handle, streams=_streams, lock=_lock, idempotency=_idempotency,
                   on_start=ensure_scheduled,
                   description="S6 position manager: exchange-side stops, trailing, TP ladder, add-ons, "
                               "auto-transfer, closes, FLATTEN")
