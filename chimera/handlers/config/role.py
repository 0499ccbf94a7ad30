"""Role s10, the config service: the promote command, operators' resume/abort, the rollout's own
analysis timers and the monthly cost-curve fit (armed at start), all on ``cfg:{commands}``. Lint, create, dry-run, simulate and the cost-curve fit
are service functions (``service.py``, ``simulate.py``, ``curves.py``) the CLI and the gateway call.
"""

from __future__ import annotations

from chimera.handlers.config import curves, promote, simulate_cmd
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import PromoteBundle, PromotionCommand, SimulateBundle, TimerFired
from chimera.streams import keys
from chimera.workers.handler import Context, HandlerSpec, Route


def _streams(_settings) -> list[str]:
    return [keys.CFG_COMMANDS]


def on_timer(env: Envelope, ctx: Context) -> list:
    """S10's two timers: a rollout's analysis tick, the monthly cost-curve fit."""
    t: TimerFired = env.payload
    if t.name == curves.TIMER:
        return curves.on_timer(ctx, t.due_ms or ctx.now_ms())
    return promote.on_timer(env, ctx)


def _timer_lock(env: Envelope) -> str:
    return "s10:costfit" if env.payload.name == curves.TIMER else promote.lock_scope(env)


SPEC = HandlerSpec(
    role="s10",
    streams=_streams,
    routes={
        PromoteBundle: Route(promote.on_promote, lock=promote.lock_scope),
        PromotionCommand: Route(promote.on_command, lock=promote.lock_scope),
        SimulateBundle: Route(simulate_cmd.on_simulate),  # no lock: idempotent by simulation_id, runs long
        TimerFired: Route(on_timer, lock=_timer_lock),
    },
    on_start=curves.on_start,
    description="S10 config service: staged rollout (shadow, canary, ramp), analysis gates, automatic rollback",
)
