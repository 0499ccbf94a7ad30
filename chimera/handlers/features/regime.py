"""Daily market regime (S2 §2): realized-vol percentile vs trailing history → FROZEN/NORMAL/EXTREME.

A timer the handlers return: ``TimerFired(name="s2.regime")`` on ``feat:{commands}``, timer key
``s2:regime:daily``, due at ``regime_at_utc_min`` (default 00:05 UTC) each day. The first bar a
worker publishes arms it (every replica arms the same key, so one timer stays armed); each tick
computes, writes the regime through the risk port and returns the next day's timer.

Computation, for the regime symbol (settings.extra ``regime_symbol``, default the rho reference):

* ``rv`` = sample stdev of the 1m log returns of the 24 h before the tick, annualized
  (x sqrt(525600)), from the closed-bar store (``ctx.features.closes``; 3 days kept by S1);
  fewer than ``regime_min_bars`` (720: half a day) bars → NORMAL with
  ``reason="insufficient_bars"``, and the day is not recorded in the history;
* history: ``regime_history/<SYM>:<YYYY-MM-DD>`` (one document per day, written here);
* ``pct`` = share of the trailing ``regime_history_days`` (30) daily rvs that are <= today's;
  ``pct <= 0.10`` → FROZEN, ``pct >= 0.90`` → EXTREME, else NORMAL; fewer than
  ``regime_min_history`` (5) days → NORMAL with ``reason="insufficient_history"``.

The state is a ``RegimeState`` (``prod:{regime}:market:state`` on Redis) whose ``rev`` the port
increments on every write; it expires at ``expires_at`` (as_of + 26 h) so a dead scheduler shows up
as "no regime", never as a stale one.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from chimera.handlers.features.indicators import sample_std
from chimera.handlers.features.toolkit import REGIME_TIMER_NAME, extra, reference_symbol
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import MetricEvent, TimerFired
from chimera.schemas.strategy import RegimeState
from chimera.store.collections import REGIME_HISTORY
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

DAY_MS = 86_400_000
STATE_TTL_MS = 26 * 3_600_000


def next_due(after_ms: int, at_utc_min: int = 5) -> int:
    day0 = after_ms - after_ms % DAY_MS
    due = day0 + at_utc_min * 60_000
    return due if due > after_ms else due + DAY_MS


def arm_regime_timer(ctx: Context, after_ms: int) -> Emit:
    """The next daily tick after ``after_ms``, as a timer (same key: replaces an armed one)."""
    due = next_due(after_ms, int(extra(ctx).get("regime_at_utc_min", 5)))
    return Emit(keys.FEAT_COMMANDS, TimerFired(name=REGIME_TIMER_NAME, ref="daily", due_ms=due), f"s2.regime:{due}",
                event_time=due, due_ms=due, timer_key=keys.REGIME_TIMER)


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


def handle_regime(env: Envelope, ctx: Context) -> list[Emit]:
    timer: TimerFired = env.payload
    if timer.name != REGIME_TIMER_NAME:
        return []  # another role's timer on the same stream: not ours
    ex = extra(ctx)
    sym = str(ex.get("regime_symbol", reference_symbol(ctx.settings))).upper()
    as_of = timer.due_ms or env.event_time
    closes = ctx.features.closes(sym, as_of - DAY_MS - 60_000, as_of - 60_000)
    # A day with less than half its bars (a first start, an outage) is not a day's volatility: it
    # would skew the percentile of every later day, so it is neither used nor kept.
    rv = daily_rv(closes) if len(closes) >= int(ex.get("regime_min_bars", DAY_MS // 60_000 // 2)) else None
    day = datetime.fromtimestamp((as_of - 1) / 1000, tz=UTC).strftime("%Y-%m-%d")  # the day just ended
    hist_days = int(ex.get("regime_history_days", 30))
    history = [d["rv"] for d in ctx.store.query(REGIME_HISTORY, {"symbol": sym, "as_of": ("<", as_of)},
                                                order_by="as_of", desc=True, limit=hist_days)
               if d.get("rv") is not None]
    if rv is None:
        regime, pct, reason = "NORMAL", None, "insufficient_bars"
    else:
        regime, pct, reason = classify(rv, history, min_history=int(ex.get("regime_min_history", 5)))
        ctx.store.upsert(REGIME_HISTORY, f"{sym}:{day}", {"symbol": sym, "day": day, "as_of": as_of, "rv": rv,
                                                          "bars": len(closes)})
    expires_at = as_of + STATE_TTL_MS
    ctx.risk.set_regime(RegimeState(regime=regime, pct=pct, rv=rv, symbol=sym, as_of=as_of, expires_at=expires_at,
                                    history_days=len(history), reason=reason, computed_at=ctx.now_ms()),
                        ttl_ms=max(expires_at - ctx.now_ms(), 1000))
    latency = max(ctx.now_ms() - as_of, 0)
    return [Emit(keys.metrics_stream("s2.regime_latency"),
                 MetricEvent(name="s2.regime_latency", value=float(latency), labels={"symbol": sym, "regime": regime},
                             ts=ctx.now_ms()), f"s2.regime_latency:{as_of}"),
            arm_regime_timer(ctx, after_ms=as_of)]
