"""``PROCESSING_LAG`` (trading-ci): an alert when a consumer group falls behind on a core stream.

Every ``health.lag_interval_ms`` (default 15 s, S11's own timer ``s11:lag``) S11 reads the backlog of
every group on the core streams through its port (``ports/health_inputs.py``: entries not yet
delivered to the group plus those delivered and not acked; the worst group per stream) and raises a
WARN alert ``PROCESSING_LAG`` for each stream whose backlog passes its threshold:
``health.lag_alert.<stream>``, else ``health.lag_alert.default`` (1000 entries). The alert's
``dedup_key`` is ``lag:<stream>``, so a group that stays behind is one alert counting repeats, not one
per tick.
"""

from __future__ import annotations

from collections.abc import Mapping

from chimera.errors import PermanentError
from chimera.schemas.messages import Alert, TimerFired
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

TIMER = "s11:lag"
INTERVAL_MS = 15_000
DEFAULT_THRESHOLD = 1000


def arm(due_ms: int) -> Emit:
    return Emit(keys.HEALTH_TIMERS, TimerFired(name=TIMER, due_ms=due_ms), f"{TIMER}:{due_ms}", due_ms=due_ms,
                timer_key=TIMER)


def threshold(ctx: Context, stream: str) -> int:
    table = (ctx.config.get("health", {}) or {}).get("lag_alert") if ctx.config is not None else None
    table = table if isinstance(table, Mapping) else {}
    raw = table.get(stream, table.get("default", DEFAULT_THRESHOLD))
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"bundle health.lag_alert.{stream}={raw!r}: expected an integer (entries)") from exc


def check(ctx: Context, now_ms: int) -> list[Emit]:
    """One ``PROCESSING_LAG`` alert per core stream whose worst group is past its threshold."""
    out = []
    for stream, lag in sorted(ctx.health_inputs.stream_lag().items()):
        limit = threshold(ctx, stream)
        if lag <= limit:
            continue
        ctx_fields = {"dedup_key": f"lag:{stream}", "stream": stream, "lag": str(lag), "threshold": str(limit),
                      "at": str(now_ms)}
        out.append(Emit(keys.ALERTS, Alert(level="WARN", code="PROCESSING_LAG",
                                           message=f"a consumer group on {stream} is {lag} entries behind "
                                                   f"(threshold {limit})", context=ctx_fields),
                        f"lag:{stream}:{now_ms}"))
    return out


def on_lag(ctx: Context, _timer: TimerFired) -> list[Emit]:
    now = ctx.now_ms()
    interval = ctx.config.param("health", "lag_interval_ms", INTERVAL_MS) if ctx.config is not None else INTERVAL_MS
    return [arm(now + interval), *check(ctx, now)]
