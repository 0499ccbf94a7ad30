"""Trailing lock-profit ladder: ``positions.trailing_steps: [[roe_trigger, lock_roe], ...]``.

ROE and the steps are fractions of the margin (0.02 = 2 %). Once the position's ROE reaches a step's
trigger, its stop moves to the price that locks ``lock_roe``:
``entry × (1 ± lock_eff / leverage)`` with ``lock_eff = trigger − (trigger − lock_roe) × stop_mult``
(the regime/health stop multiplier widens or narrows the gap), rounded to the tick away from the
market. The stop only ever moves in the position's favour and the reached step never goes back;
this module only sets the target (``sl_price``, ``trail_step``), ``stops.reconcile`` moves the order.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.positions.common import pairs, param
from chimera.handlers.positions.multipliers import Multipliers
from chimera.schemas.documents.positions import Position, replace
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context


def steps(ctx: Context) -> list[tuple[Decimal, Decimal]]:
    got = pairs(ctx, "trailing_steps")
    if not got:
        raise PermanentError("bundle positions.trailing_enabled is set but positions.trailing_steps is empty")
    for i, (trigger, lock) in enumerate(got):
        if not lock < trigger:
            raise PermanentError(f"bundle positions.trailing_steps[{i}]: lock_roe {lock} must be below "
                                 f"roe_trigger {trigger}")
    return got


def enabled(ctx: Context) -> bool:
    return param(ctx, "trailing_enabled", False)


def target(ctx: Context, pos: Position, roe: Decimal, mult: Multipliers, f: Filters) -> Position:
    """The position with its stop target raised to the highest reached step (unchanged when none is new)."""
    ladder = steps(ctx)
    reached = sum(1 for trigger, _ in ladder if roe >= trigger)
    if reached <= pos.trail_step or pos.entry_price is None:
        return pos
    trigger, lock = ladder[reached - 1]
    lock_eff = trigger - (trigger - lock) * mult.stop
    d = pos.direction
    price = f.price(pos.entry_price * (1 + d * lock_eff / pos.leverage), pos.side, passive=True)
    cur = pos.sl_price
    if cur is None or d * (price - cur) > 0:
        return replace(pos, trail_step=reached, sl_price=price)
    return replace(pos, trail_step=reached)
