"""One position's management pass (``ManagePositions`` with ``pos_id``, under ``lock:{pos}:<pos_id>``).

Order of the pass: kill-switch FLATTEN → mark, ROE, distance to liquidation (stored, snapshot
``latest``) → trailing target → take-profit rung → add-on (only when no rung is sent, no kill switch is
set and the ladder has not started) → the stop follows the result; ``last_pass`` is written last. Every decision is keyed by the position's own
state (reached step, rung number, add number, stop level), so running the pass twice on the same
market sends nothing new.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.common import kill_mode
from chimera.handlers.positions import adds, ladder, marks, stops, trailing
from chimera.handlers.positions.common import (
    OPEN_STATES,
    POSITIONS,
    filters,
    market_intent,
    move,
    save,
    snapshot,
    submit,
)
from chimera.handlers.positions.multipliers import current as multipliers
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import ManagePositions
from chimera.schemas.states import PositionEvent as PE
from chimera.schemas.states import PositionStatus as P
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context


def flatten(ctx: Context, pos: dict) -> list[Emit]:
    pos = move(ctx, pos, PE.CLOSE_REQUESTED)
    return [submit(market_intent(pos, "flatten", Decimal(pos["qty"]), "FLATTEN", reduce=True))]


def run(env: Envelope, ctx: Context, tick: ManagePositions) -> list[Emit]:
    pos = ctx.store.get(POSITIONS, tick.pos_id)
    if pos is None:
        return []
    if pos["state"] not in OPEN_STATES:
        if ctx.redis is not None:  # a position closed outside S6 (reconciler): stop fanning out to it
            ctx.redis.srem(keys.pos_active_symbol(pos["symbol"]), pos["_key"])
        return []
    if pos["state"] != P.ACTIVE.value:
        return stops.reconcile(ctx, pos)  # closing: keep it protected until flat
    mode = kill_mode(ctx)
    if mode == "FLATTEN":
        return flatten(ctx, pos)
    patch = {**marks.view(ctx, pos, tick), "managed_at": ctx.now_ms(), "last_pass": env.idempotency_key}
    patch.update(marks.measures({**pos, **patch}))
    out: list[Emit] = []
    if "roe" in patch:
        f = filters(ctx, pos["symbol"])
        mult = multipliers(ctx)
        roe, price_move, mark = Decimal(patch["roe"]), Decimal(patch["move"]), Decimal(patch["mark"])
        patch.update(regime=mult.regime, health=mult.health)
        if trailing.enabled(ctx):
            patch.update(trailing.target(ctx, {**pos, **patch}, roe, mult, f))
        out += ladder.decide(ctx, pos, roe, price_move, f)
        if not out and not mode and not ladder.started(ctx, pos["_key"]):  # S4 refuses adds under a kill switch
            out += adds.decide(ctx, pos, mark, mult, f)
    # Orders first, the document last: once ``last_pass`` shows, everything the pass started is recorded.
    out += stops.reconcile(ctx, {**pos, **patch})
    moved = patch.get("sl_price") not in (None, pos.get("sl_price"))
    pos = save(ctx, pos, patch)
    if moved:
        snapshot(ctx, pos, f"trail{pos['trail_step']}")
    snapshot(ctx, pos, "latest")
    return out
