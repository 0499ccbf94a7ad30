"""When S5 runs besides on demand: once when a worker starts, then every ``reconciler.interval_ms``.

The period is a chain on the scheduler's due-queue: one pending ``Reconcile`` per account under
``keys.recon_periodic_timer`` (re-scheduling the key replaces it, so replicas and restarts never
stack up runs). A periodic run schedules the next one when it starts, so a run that fails and is
retried still keeps the chain alive; any other run (start-up, on demand) only re-arms a missing
chain. ``interval_ms`` <= 0 turns the period off.
"""

from __future__ import annotations

from chimera.schemas.messages import Reconcile
from chimera.streams import keys
from chimera.streams.producer import Emit, envelope_for
from chimera.workers import scheduler
from chimera.workers.handler import Context

PERIODIC = "periodic"
STARTUP = "startup"
DEFAULT_INTERVAL_MS = 60_000


def param(ctx: Context, name: str, default):
    """``reconciler.<name>`` (flat key or nested section) from the active bundle."""
    return ctx.config.param("reconciler", name, default)


def interval_ms(ctx: Context) -> int:
    return param(ctx, "interval_ms", DEFAULT_INTERVAL_MS)


def schedule_next(ctx: Context, account_id: str, *, replace: bool) -> int | None:
    """Arm the next periodic run (``replace``: even if one is pending). Returns its due time."""
    every = interval_ms(ctx)
    if every <= 0 or ctx.redis is None:
        return None
    key = keys.recon_periodic_timer(account_id)
    if not replace and ctx.redis.zscore(keys.SCHED_DUE, key) is not None:
        return None
    due = ctx.now_ms() + every
    emit = Emit(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by=PERIODIC),
                f"recon:{PERIODIC}:{account_id}:{due}", account_id)
    scheduler.schedule(ctx.redis, key, due, keys.RECON_COMMANDS, envelope_for(emit, parent=None, now_ms=ctx.now_ms()))
    return due


def accounts(ctx: Context) -> list[str]:
    got = param(ctx, "accounts", ["main"])
    return [str(a) for a in got] or ["main"]


def on_start(ctx: Context) -> list[Emit]:
    """A worker coming up reconciles at once (state may have drifted while nobody watched)."""
    out = []
    now = ctx.now_ms()
    for account_id in accounts(ctx):
        schedule_next(ctx, account_id, replace=False)
        out.append(Emit(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by=STARTUP),
                        f"recon:{STARTUP}:{account_id}:{ctx.consumer}:{now}", account_id))
    return out
