"""The grading tick: every ``health.interval_ms`` S11 measures, grades and writes the grade.

The grade goes to ``prod:{health}:system:state`` through the risk port with a TTL of
``health.ttl_ms`` (default three intervals). **STALE**: when S11 stops grading (not running,
crashing, its timer lost) the key expires and readers see no grade. That absence is a grade of its
own, ``STALE``: S3 applies ``strategy.health.when_missing`` (default GREEN: trading continues at
full size; set it to ORANGE/RED for a fail-closed desk), S6 applies its multipliers for GREEN, and
the ``ChimeraHealthStale`` Prometheus alert fires (``chimera_health_age_seconds``). S11 reports a
grade that follows a STALE as ``previous = "STALE"``.

The tick re-arms itself (one timer key, so replicas and restarts never double it); a worker
arms it at start (``on_start``).
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger
from prometheus_client import Gauge

from chimera.errors import PermanentError
from chimera.handlers.health import daily, grading, series
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Alert, OpsEvent, TimerFired
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

TIMER = "s11:grade"
INTERVAL_MS = 15_000
SET_BY = "s11-health"
HEALTH_ALERT_KEY = "health:system"
ALERT_LEVEL = {"YELLOW": "INFO", "ORANGE": "WARN", "RED": "ERROR"}
LEVEL_VALUE = {"GREEN": 0, "YELLOW": 1, "ORANGE": 2, "RED": 3}

HEALTH_LEVEL = Gauge("chimera_health_level", "The grade in Redis at scrape time: 0 GREEN, 1 YELLOW, 2 ORANGE, 3 RED, "
                     "-1 STALE (no grade)")
HEALTH_GRADED_AT = Gauge("chimera_health_graded_timestamp_seconds", "When S11 last wrote the grade (epoch s)")
HEALTH_SIGNAL = Gauge("chimera_health_signal", "Last measured value of each graded signal", ["signal"])
PNL_TODAY = Gauge("chimera_strategy_net_pnl_today_usdt", "Net PnL of the UTC day (realized - fees + funding)",
                  ["bundle_id", "symbol"])
TRADES_TODAY = Gauge("chimera_strategy_trades_today", "Positions closed in the UTC day", ["bundle_id", "symbol"])
ALERTS_OPEN = Gauge("chimera_alerts_open", "Alerts OPEN or ACKED, by level and account", ["level", "account_id"])


def _bind_level(port) -> None:
    """The level gauge reads the grade at scrape time, so every S11 replica reports the current grade
    (ticks go to whichever replica reads them; a value set at tick time would linger on the others)."""
    if getattr(HEALTH_LEVEL, "_chimera_port", None) is port:
        return

    def read() -> float:
        try:
            return float(LEVEL_VALUE.get(port.health() or "", -1))
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis blinked
            return float("nan")

    HEALTH_LEVEL.set_function(read)
    HEALTH_LEVEL._chimera_port = port


def export(ctx: Context, today: dict[str, dict]) -> None:
    """Gauges of the day's figures and the open alerts (each worker's /metrics serves them)."""
    from chimera.handlers.health import alerts

    for doc in today.values():
        PNL_TODAY.labels(doc["bundle_id"], doc["symbol"]).set(float(doc["net_pnl_usdt"]))
        TRADES_TODAY.labels(doc["bundle_id"], doc["symbol"]).set(doc["trades"])
    counts: dict[tuple[str, str], int] = {}
    for doc in ctx.store.query(alerts.ALERTS, {"state": ("in", [alerts.OPEN, alerts.ACKED])}):
        k = (doc["level"], doc.get("account_id") or "main")
        counts[k] = counts.get(k, 0) + 1
    ALERTS_OPEN.clear()
    for (level, account), n in counts.items():
        ALERTS_OPEN.labels(level, account).set(n)


def risk_port(ctx: Context):
    return ctx.risk


def interval_ms(ctx: Context) -> int:
    return ctx.config.param("health", "interval_ms", INTERVAL_MS) if ctx.config is not None else INTERVAL_MS


def arm(ctx: Context, due_ms: int) -> Emit:
    return Emit(keys.HEALTH_TIMERS, TimerFired(name=TIMER, due_ms=due_ms), f"{TIMER}:{due_ms}",
                due_ms=due_ms, timer_key=TIMER)


def on_start(ctx: Context) -> list[Emit]:
    from chimera.handlers.health import costfit

    # The same timer keys every start: a restart or a second replica re-arms, never doubles.
    return [arm(ctx, ctx.now_ms()), costfit.arm(costfit.month_start(ctx.now_ms(), 1))]


def measure(ctx: Context, today: dict[str, dict]) -> dict[str, float | None]:
    cfg = ctx.config
    min_samples = cfg.param("health", "min_samples", 20) if cfg is not None else 20
    em = ctx.exec_metrics  # S4's own port: the figures it counts once per intent
    counts, acks = em.counters(), sorted(em.ack_samples())
    sent, filled, rejected = (counts.get(k, 0) for k in ("maker_sent_count", "maker_filled_count", "maker_reject_count"))
    now = ctx.now_ms()
    lags = ctx.health_inputs.stream_lag()
    ks = risk_port(ctx).kill_switch()
    equity = cfg.param("health", "equity_usdt", Decimal(0)) if cfg is not None else Decimal(0)
    realized = daily.realized_today(today)
    return {
        "maker_fill_ratio": filled / sent if sent >= min_samples else None,
        "reject_rate": rejected / sent if sent >= min_samples else None,
        # Nearest-rank p95, as the gateway's /metrics computes it.
        "router_p95_ms": float(acks[max(0, -(-95 * len(acks) // 100) - 1)]) if len(acks) >= min_samples else None,
        "stream_lag": float(max(lags.values())) if lags else None,
        "ws_lag_ms": series.latest(ctx.store, "s1.ws_rtt", now - 60_000),
        "reconcile_inconsistent": 1.0 if ks is not None and ks.set_by == "s5-reconciler" else 0.0,
        "drawdown_pct": float(max(Decimal(0), -realized) / equity) if equity > 0 else None,
        "model_auc": series.latest(ctx.store, "s3.model_auc", now - 86_400_000, "last"),
        "model_brier": series.latest(ctx.store, "s3.model_brier", now - 86_400_000, "last"),
    }


def on_tick(env: Envelope, ctx: Context) -> list[Emit]:
    p: TimerFired = env.payload
    if p.name != TIMER:
        from chimera.handlers.health import costfit

        if p.name == costfit.TIMER:
            return costfit.on_costfit(ctx, p)
        raise PermanentError(f"s11 has no timer named {p.name!r}")
    now = ctx.now_ms()
    today = daily.write(ctx.store, daily.day_start(now))
    if daily.day_start(now - interval_ms(ctx)) != daily.day_start(now):
        daily.write(ctx.store, daily.day_start(now) - daily.DAY_MS)  # close yesterday with its last facts
    signals = measure(ctx, today)
    export(ctx, today)
    table = grading.thresholds(ctx.config.get("health", {}).get("thresholds") if ctx.config is not None else None)
    verdict = grading.grade(signals, table)
    port = risk_port(ctx)
    previous = port.health() or "STALE"
    ttl = ctx.config.param("health", "ttl_ms", 3 * interval_ms(ctx)) if ctx.config is not None else 3 * INTERVAL_MS
    port.set_health(verdict.level, ttl)
    _bind_level(port)
    HEALTH_GRADED_AT.set(now / 1000)
    for name, value in signals.items():
        if value is not None:
            HEALTH_SIGNAL.labels(name).set(value)
    out: list[Emit] = [arm(ctx, now + interval_ms(ctx))]
    if verdict.level != previous:
        logger.info("health {} -> {} ({})", previous, verdict.level, verdict.reasons)
        reasons = {k: v for k, v in verdict.reasons.items()}
        # An OpsEvent (not a type of its own) so every reader of ops:events decodes it.
        audit = OpsEvent(kind="HEALTH_GRADED", actor=SET_BY,
                         detail={"level": verdict.level, "previous": previous, "at": str(now), **reasons})
        out.append(Emit(keys.OPS_EVENTS, audit, f"health:{now}:{verdict.level}"))
        if verdict.level in ALERT_LEVEL:
            text = "; ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or verdict.level
            out.append(Emit(keys.ALERTS, Alert(level=ALERT_LEVEL[verdict.level], code=f"HEALTH_{verdict.level}",
                                               message=f"system health {verdict.level}: {text}",
                                               context={"dedup_key": HEALTH_ALERT_KEY, **reasons}),
                            f"health:{now}:alert:{verdict.level}"))
    if verdict.level == "GREEN":
        from chimera.handlers.health import alerts

        doc = ctx.store.get(alerts.ALERTS, HEALTH_ALERT_KEY)
        if doc is not None and doc["state"] != alerts.RESOLVED:
            alerts.resolve(ctx.store, HEALTH_ALERT_KEY, by=SET_BY, now_ms=now)
    return out
