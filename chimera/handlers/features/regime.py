"""Daily market regime (S2 §2): realized-vol percentile vs trailing history → FROZEN/NORMAL/EXTREME.

Driven by the due-queue: the key ``s2:regime:daily`` fires a ``TimerFired(name="s2.regime")`` on
``feat:{commands}`` at ``regime_at_utc_min`` (default 00:05 UTC) each day; the handler computes,
writes ``prod:{regime}:market:state`` and schedules the next day. Any S2 replica schedules the
first tick once per process (re-scheduling the same key is idempotent).

Computation, for the regime symbol (settings.extra ``regime_symbol``, default the rho reference):

* ``rv`` = sample stdev of the 1m log returns of the 24 h before the tick, annualized
  (x sqrt(525600)), from the closed-bar store ``mkt:{bars}:<SYM>`` (3 days kept by S1);
* history: ``regime_history/<SYM>:<YYYY-MM-DD>`` (one document per day, written here);
* ``pct`` = share of the trailing ``regime_history_days`` (30) daily rvs that are <= today's;
  ``pct <= 0.10`` → FROZEN, ``pct >= 0.90`` → EXTREME, else NORMAL; fewer than
  ``regime_min_history`` (5) days → NORMAL with ``reason="insufficient_history"``.

The state value is JSON ``{regime, rev, pct, rv, symbol, as_of, expires_at, history_days, reason}``;
``rev`` comes from INCR ``prod:{regime}:market:rev``; the key itself expires at ``expires_at``
(as_of + 26 h) so a dead scheduler shows up as "no regime", never as a stale one.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from chimera.errors import PermanentError
from chimera.handlers.features.bars import RedisBars
from chimera.handlers.features.indicators import sample_std
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import MetricEvent, TimerFired
from chimera.streams import keys
from chimera.streams.producer import Emit, envelope_for
from chimera.workers import scheduler
from chimera.workers.handler import Context

DAY_MS = 86_400_000
STATE_TTL_MS = 26 * 3_600_000


def _extra(ctx: Context) -> dict:
    return getattr(ctx.settings, "extra", None) or {}


def next_due(after_ms: int, at_utc_min: int = 5) -> int:
    day0 = after_ms - after_ms % DAY_MS
    due = day0 + at_utc_min * 60_000
    return due if due > after_ms else due + DAY_MS


def schedule_next(r, now_ms: int, after_ms: int | None = None, at_utc_min: int = 5) -> int:
    from chimera.handlers.features.role import REGIME_TIMER_NAME

    due = next_due(after_ms if after_ms is not None else now_ms, at_utc_min)
    timer = TimerFired(name=REGIME_TIMER_NAME, ref="daily", due_ms=due)
    env = envelope_for(Emit(keys.FEAT_COMMANDS, timer, f"s2.regime:{due}", event_time=due), parent=None, now_ms=now_ms)
    scheduler.schedule(r, keys.REGIME_TIMER, due, keys.FEAT_COMMANDS, env)
    return due


def ensure_scheduled(ctx: Context) -> None:
    """Once per process: make sure tomorrow's tick is queued (keeps an existing one)."""
    if ctx.redis is None or ctx.services.get("s2.regime_scheduled"):
        return
    if ctx.redis.zscore(keys.SCHED_DUE, keys.REGIME_TIMER) is None:
        schedule_next(ctx.redis, ctx.now_ms(), at_utc_min=int(_extra(ctx).get("regime_at_utc_min", 5)))
    ctx.services["s2.regime_scheduled"] = True


def classify(rv: float, history: list[float], *, min_history: int = 5, frozen: float = 0.10,
             extreme: float = 0.90) -> tuple[str, float | None, str]:
    if len(history) < min_history:
        return "NORMAL", None, "insufficient_history"
    pct = sum(1 for h in history if h <= rv) / len(history)
    if pct <= frozen:
        return "FROZEN", pct, "rv_low_percentile"
    if pct >= extreme:
        return "EXTREME", pct, "rv_high_percentile"
    return "NORMAL", pct, "rv_mid_percentile"


def daily_rv(closes: list[tuple[int, float]], bar_ms: int = 60_000) -> float | None:
    rets = [math.log(c1 / c0) for (t0, c0), (t1, c1) in zip(closes, closes[1:], strict=False) if t1 - t0 == bar_ms]
    if len(rets) < 2:
        return None
    return sample_std(rets) * math.sqrt(365 * DAY_MS / bar_ms)


def handle_regime(env: Envelope, ctx: Context, timer: TimerFired) -> list[Emit]:
    from chimera.handlers.features.role import reference_symbol

    if ctx.redis is None:
        raise PermanentError("the daily regime runs on the Redis runtime (it writes prod:{regime}:market:state)")
    extra = _extra(ctx)
    sym = str(extra.get("regime_symbol", reference_symbol(ctx.settings))).upper()
    as_of = timer.due_ms or env.event_time
    closes = RedisBars(ctx.redis).closes(sym, as_of - DAY_MS - 60_000, as_of - 60_000)
    rv = daily_rv(closes)
    day = datetime.fromtimestamp((as_of - 1) / 1000, tz=UTC).strftime("%Y-%m-%d")  # the day just ended
    hist_days = int(extra.get("regime_history_days", 30))
    history = [d["rv"] for d in ctx.store.query("regime_history", {"symbol": sym, "as_of": ("<", as_of)},
                                                order_by="as_of", desc=True, limit=hist_days)
               if d.get("rv") is not None]
    if rv is None:
        regime, pct, reason = "NORMAL", None, "no_bars"
    else:
        regime, pct, reason = classify(rv, history, min_history=int(extra.get("regime_min_history", 5)))
        ctx.store.upsert("regime_history", f"{sym}:{day}", {"symbol": sym, "day": day, "as_of": as_of, "rv": rv,
                                                             "bars": len(closes)})
    rev = int(ctx.redis.incr(keys.REGIME_REV))
    expires_at = as_of + STATE_TTL_MS
    state = {"regime": regime, "rev": rev, "pct": pct, "rv": rv, "symbol": sym, "as_of": as_of,
             "expires_at": expires_at, "history_days": len(history), "reason": reason, "computed_at": ctx.now_ms()}
    ttl = max(expires_at - ctx.now_ms(), 1000)
    ctx.redis.set(keys.REGIME_STATE, json.dumps(state), px=ttl)
    schedule_next(ctx.redis, ctx.now_ms(), after_ms=as_of, at_utc_min=int(extra.get("regime_at_utc_min", 5)))
    latency = max(ctx.now_ms() - as_of, 0)
    return [Emit(keys.metrics_stream("s2.regime_latency"),
                 MetricEvent(name="s2.regime_latency", value=float(latency), labels={"symbol": sym, "regime": regime},
                             ts=ctx.now_ms()), f"s2.regime_latency:{as_of}")]
