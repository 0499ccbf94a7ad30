"""S6 role: the position manager's HandlerSpec (registry entry ``s6``)."""

from __future__ import annotations

from chimera.handlers.positions.core import handle, pos_id_of
from chimera.schemas.messages import OrderResult
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec


def _streams(_settings) -> list[str]:
    return [keys.ORD_RESULTS, keys.POS_COMMANDS]


def _lock(env) -> str | None:
    p = env.payload
    if isinstance(p, OrderResult):
        return keys.lock_pos(pos_id_of(p))
    return "lock:{pos}:__tick__"


SPEC = HandlerSpec(role="s6", handle=handle, streams=_streams, lock=_lock,
                   description="S6 position manager: exchange-side stops on entry fills, closes, FLATTEN")
