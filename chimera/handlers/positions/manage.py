"""One position's management pass (``ManagePositions`` with ``pos_id``, under ``lock:{pos}:<pos_id>``).

Order of the pass: kill-switch FLATTEN → mark, ROE, distance to liquidation → the health grade's stop
tightening (``multipliers.tighten``) → stagnation (STAGNATED once, for S8) → trailing target →
take-profit rung → add-on (only when no rung is sent, no kill switch is set and the ladder has not
started) → the stop follows the result; the position (with ``last_pass``) is written once, at the end,
before the orders go out. Every decision is keyed by the position's own state (reached step, rung
number, add number, stop level), so running the pass twice on the same market sends nothing new.

A pass on a mark event that changes nothing but the market it saw (``VIEW``) and sends nothing writes
nothing: marks come several times a second per position and most move nothing, so writing each one (a
compare-and-set and the ``latest`` snapshot) was ~22 % of the SMA backtest's CPU time. The stored mark, ROE and
``last_pass`` are then those of the last pass that wrote: a tick's pass always writes, so they lag by at
most ``positions.tick_ms`` (the UI's and the tests' view of a live position). A mark older than an
unrecorded newer one is managed rather than dropped: only replicas sharing ``pos:{commands}`` deliver one
that late, and its pass decides on a price a mark old (the event-time runtime delivers marks in order).
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.autopsy.stagnation import running
from chimera.handlers.positions import adds, ladder, marks, protection, stops, trailing
from chimera.handlers.positions.common import (
    PE,
    Out,
    event,
    filters,
    kill_mode,
    load,
    market_intent,
    moved,
    snapshot,
    submit,
)
from chimera.handlers.positions.lifecycle import write
from chimera.handlers.positions.multipliers import current as multipliers
from chimera.handlers.positions.multipliers import tighten
from chimera.schemas.documents.positions import Position, replace
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import ManagePositions
from chimera.schemas.states import PositionStatus as P
from chimera.workers.handler import Context

# What a pass records about the market it saw; a change to these alone is not worth a write (see above).
VIEW = ("mark", "mark_ts", "mark_source", "move", "roe", "liq_dist", "managed_at", "last_pass")


def run(env: Envelope, ctx: Context) -> Out:
    tick: ManagePositions = env.payload
    pos = load(ctx, tick.pos_id)
    if pos is None or not pos.is_open or pos.market != "FUT":
        return []
    if pos.state != P.ACTIVE:
        new, out = stops.reconcile(ctx, pos)  # closing: keep it protected until flat
        write(ctx, pos, new)
        return out
    if tick.mark_price is not None and pos.mark_source == "event" and tick.mark_ts < pos.mark_ts:
        return []  # an older mark than the one the position was last managed on
    mode = kill_mode(ctx, pos.account_id)
    if mode == "FLATTEN":
        new = moved(pos, PE.CLOSE_REQUESTED)
        write(ctx, pos, new)
        return [submit(market_intent(new, "flatten", new.qty, "FLATTEN", reduce=True))]
    new = marks.measured(replace(pos, **marks.view(ctx, pos, tick), managed_at=ctx.now_ms(),
                                 last_pass=env.idempotency_key))
    out: Out = []
    if new.roe is not None and new.mark is not None:
        f = filters(ctx, pos.symbol)
        mult = multipliers(ctx)
        new = replace(tighten(ctx, new, mult, f), regime=mult.regime, health=mult.health)
        new, sent = stagnation(ctx, new)
        out += sent
        if trailing.enabled(ctx):
            new = trailing.target(ctx, new, new.roe, mult, f)
        new, sent = ladder.decide(ctx, new, new.roe, new.move, f)
        out += sent
        if not out and not mode and not new.tp.started:  # S4 refuses adds under a kill switch
            new, sent = adds.decide(ctx, new, new.mark, mult, f)
            out += sent
    if not new.stop.intent_id and new.stop.pending is None and new.sl_price is not None and new.mark is not None \
            and protection.would_trigger(new, new.sl_price, new.mark):
        # Nothing armed and the market is already through the stop: out now rather than unprotected.
        new, sent = protection.exit_now(new, f"exit-v{pos.version}", f"no stop armed and the mark {new.mark} is "
                                        f"through the stop {new.sl_price}", "UNPROTECTED_THROUGH_STOP")
        write(ctx, pos, new)
        return out + sent
    new, sent = stops.reconcile(ctx, new)
    if tick.mark_price is not None and not out and not sent and viewed_only(pos, new):
        return []
    stored = write(ctx, pos, new)
    if stored.sl_price != pos.sl_price:
        snapshot(ctx, stored, f"trail{stored.trail_step}")
    snapshot(ctx, stored, "latest")
    return out + sent


def viewed_only(before: Position, after: Position) -> bool:
    """``after`` differs from ``before`` in the market view (``VIEW``) at most."""
    return replace(after, **{f: getattr(before, f) for f in VIEW}) == before


def stagnation(ctx: Context, pos: Position) -> tuple[Position, Out]:
    """``PositionChanged(STAGNATED)`` once, when |ROE| has stayed inside ``autopsy.stagnation_band`` for
    ``autopsy.stagnation_ms`` (both > 0 to turn it on): the passes are the samples, the position keeps when
    the current in-band run began (``flat_since``) and when it was announced (``stagnated_at``)."""
    band = ctx.config.param("autopsy", "stagnation_band", Decimal(0))
    min_ms = ctx.config.param("autopsy", "stagnation_ms", 0)
    if band <= 0 or min_ms <= 0 or pos.stagnated_at or pos.roe is None:
        return pos, []
    now = ctx.now_ms()
    since, hit = running(pos.flat_since, now, float(pos.roe), float(band), min_ms)
    pos = replace(pos, flat_since=since)
    if not hit:
        return pos, []
    pos = replace(pos, stagnated_at=now)
    return pos, [event(pos, "STAGNATED", tag=str(since))]
