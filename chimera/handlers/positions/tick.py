"""S6's management tick: ``ManagePositions`` without ``pos_id`` on ``pos:{commands}``.

The tick is a timer S6 returns (``keys.POS_TICK_TIMER``: one armed at a time, a new one replaces it),
every ``positions.tick_ms`` (default 5000; 0 turns it off, e.g. when tests drive ticks): armed when a
worker starts (``on_start``) and by each tick for the next. A tick runs the auto-transfer check once and
fans out one ``ManagePositions(pos_id)`` per open futures position (optionally only ``symbol``'s), keyed
``manage:<pos_id>:<tick key>`` so a redelivered tick is absorbed by the runtime's idempotency. The
passes run under each position's lock (``manage.py``).
"""

from __future__ import annotations

from chimera.handlers.positions import transfer
from chimera.handlers.positions.common import Out, open_briefs, param
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import ManagePositions
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context


def next_tick(ctx: Context) -> list[Emit]:
    every = param(ctx, "tick_ms", 5000)
    if every <= 0:
        return []
    due = ctx.now_ms() + every
    return [Emit(keys.POS_COMMANDS, ManagePositions(), f"s6.tick:{due}", event_time=due, due_ms=due,
                 timer_key=keys.POS_TICK_TIMER)]


def on_start(ctx: Context) -> list[Emit]:
    """A starting worker arms the tick (replacing an armed one: replicas and restarts never stack ticks)."""
    return next_tick(ctx)


def run(env: Envelope, ctx: Context) -> Out:
    tick: ManagePositions = env.payload
    out: Out = [*next_tick(ctx), *transfer.check(ctx)]
    return out + [Emit(keys.POS_COMMANDS, ManagePositions(symbol=tick.symbol, pos_id=p.pos_id),
                       f"manage:{p.pos_id}:{env.idempotency_key}") for p in open_briefs(ctx, tick.symbol)]
