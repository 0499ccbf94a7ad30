"""The account-risk and lag timers, mounted on S11 (``handlers/health/role.py``).

S11 already runs the periodic health work on one timer stream (``s11:{timers}``) under one lock, so
the account breaker's equity samples (``risk.sample``, one timer per account) and the lag check
(``s11:lag``) ride on it rather than on a role of their own: ``timers(fallback)`` routes a
``TimerFired`` by name and hands every other name to S11's grading tick; ``starts(fallback)`` arms
these timers next to S11's at worker start (fixed timer keys: a restart never doubles them).
"""

from __future__ import annotations

from chimera.handlers.health import lag
from chimera.handlers.risk import sample


def _on_sample(env, ctx):
    return sample.on_sample(env, ctx)


def _on_lag(env, ctx):
    return lag.on_lag(ctx, env.payload)


TIMERS = {sample.TIMER: _on_sample, lag.TIMER: _on_lag}


def timers(fallback):
    def on_timer(env, ctx):
        handler = TIMERS.get(env.payload.name)
        return handler(env, ctx) if handler is not None else fallback(env, ctx)

    return on_timer


def starts(fallback):
    def on_start(ctx):
        return [*(fallback(ctx) or ()), lag.arm(ctx.now_ms()), *sample.on_start(ctx)]

    return on_start
