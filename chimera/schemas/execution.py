"""S4/S6 execution messages and Redis values (issue #6). Same evolution rules as ``messages.py``."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from chimera.schemas.envelope import Message, register


class GuardArmed(Message, frozen=True, tag="guard_armed"):
    """A SPOT guard stop armed locally (no native OCO/stop at the venue); also the key's JSON value."""

    intent_id: str
    symbol: str
    side: Literal["BUY", "SELL"]  # side of the protective exit
    qty: Decimal
    sl_price: Decimal
    state: Literal["ARMED", "FIRED", "DISARMED"] = "ARMED"
    armed_at: int = 0
    pos_id: str = ""


class SlLevel(msgspec.Struct, frozen=True, kw_only=True):
    """JSON value of ``pos:{sl}:level:<pos_id>``: the stop currently protecting the position."""

    level: int
    price: Decimal
    intent_id: str
    prev_intent_id: str = ""


register(GuardArmed)
