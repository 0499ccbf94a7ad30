"""S6's scheduler tick: ``ManagePositions`` without ``pos_id`` on ``pos:{commands}``.

The tick re-arms itself on the due-queue (``s6:manage:tick``, one pending at a time, every
``positions.tick_ms``, default 5000; 0 turns the self-scheduling off, e.g. when tests drive ticks),
runs the auto-transfer check once, and fans out one ``ManagePositions(pos_id)`` per open position
(optionally only ``symbol``'s), keyed ``manage:<pos_id>:<tick key>`` so a redelivered tick is absorbed
by the runtime's idempotency. The passes themselves run under each position's lock (``manage.py``).
The first tick is armed when a worker starts (``on_start``) and when a position opens.
"""

from __future__ import annotations

from chimera.handlers.positions import transfer
from chimera.handlers.positions.common import param
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import ManagePositions
from chimera.streams import keys
from chimera.streams.producer import Emit, envelope_for
from chimera.workers import scheduler
from chimera.workers.handler import Context


def schedule_next(ctx: Context, after_ms: int) -> None:
    every = param(ctx, "tick_ms", 5000)
    if every <= 0 or ctx.redis is None:
        return
    due = after_ms + every
    env = envelope_for(Emit(keys.POS_COMMANDS, ManagePositions(), f"s6.tick:{due}", event_time=due), parent=None,
                       now_ms=ctx.now_ms())
    scheduler.schedule(ctx.redis, keys.POS_TICK_TIMER, due, keys.POS_COMMANDS, env)


def ensure_scheduled(ctx: Context) -> list[Emit]:
    """Arm the next tick unless one is already queued (worker start, first position)."""
    if ctx.redis is not None and ctx.redis.zscore(keys.SCHED_DUE, keys.POS_TICK_TIMER) is None:
        schedule_next(ctx, ctx.now_ms())
    return []


def run(env: Envelope, ctx: Context, tick: ManagePositions) -> list[Emit]:
    schedule_next(ctx, ctx.now_ms())
    out = transfer.check(ctx)
    if ctx.redis is None:
        return out
    members = sorted(m.decode() if isinstance(m, bytes) else m for m in ctx.redis.smembers(
        keys.pos_active_symbol(tick.symbol) if tick.symbol else keys.POS_ACTIVE))
    return out + [Emit(keys.POS_COMMANDS, ManagePositions(symbol=tick.symbol, pos_id=pid),
                       f"manage:{pid}:{env.idempotency_key}") for pid in members]
