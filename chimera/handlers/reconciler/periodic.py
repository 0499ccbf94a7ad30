"""When S5 runs besides on demand: once when a worker starts, then every ``reconciler.interval_ms``.

The period is a chain of timers S5 returns: one armed ``Reconcile`` per account under
``keys.recon_periodic_timer`` (a new timer with that key replaces the armed one, so replicas and
restarts never stack up runs). A periodic run arms the next one when it starts, so a run that fails
and is retried still keeps the chain alive; a starting worker arms it too. ``interval_ms`` <= 0 turns
the period off.
"""

from __future__ import annotations

from chimera.schemas.messages import Reconcile
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

PERIODIC = "periodic"
STARTUP = "startup"
DEFAULT_INTERVAL_MS = 60_000


def param(ctx: Context, name: str, default):
    """``reconciler.<name>`` (flat key or nested section) from the active bundle."""
    return ctx.config.param("reconciler", name, default)


def interval_ms(ctx: Context) -> int:
    return param(ctx, "interval_ms", DEFAULT_INTERVAL_MS)


def next_run(ctx: Context, account_id: str) -> list[Emit]:
    """The timer of the next periodic run (none when the period is off)."""
    every = interval_ms(ctx)
    if every <= 0:
        return []
    due = ctx.now_ms() + every
    return [Emit(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by=PERIODIC),
                 f"recon:{PERIODIC}:{account_id}:{due}", account_id, event_time=due, due_ms=due,
                 timer_key=keys.recon_periodic_timer(account_id))]


def accounts(ctx: Context) -> list[str]:
    got = param(ctx, "accounts", ["main"])
    return [str(a) for a in got] or ["main"]


def on_start(ctx: Context) -> list[Emit]:
    """A worker coming up reconciles at once (state may have drifted while nobody watched)."""
    out = []
    now = ctx.now_ms()
    for account_id in accounts(ctx):
        out += next_run(ctx, account_id)
        out.append(Emit(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by=STARTUP),
                        f"recon:{STARTUP}:{account_id}:{ctx.consumer}:{now}", account_id))
    return out
