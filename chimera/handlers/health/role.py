"""S11 role: metrics and health (registry entry ``s11``).

Route table: ``MetricEvent`` (every ``metrics:events:<name>`` stream in ``METRIC_NAMES``) →
``metrics_timeseries``; ``Alert`` (``alerts``) and ``OpsEvent`` (``ops:events``) → the ``alerts``
collection and the notifier outbox; ``TimerFired`` (``s11:{timers}``) → daily strategy metrics and
the health grade. Its own audit of a grade change is an
``OpsEvent`` ``HEALTH_GRADED`` on ``ops:events`` (not an alert kind: ignored when read back).
"""

from __future__ import annotations

from chimera.handlers.health import alerts, series, tick
from chimera.handlers.risk import mount as account_risk  # breaker samples + PROCESSING_LAG timers
from chimera.schemas.messages import Alert, MetricEvent, OpsEvent, TimerFired
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route

# The metric streams producers write today (keys.metrics_stream(name)); a new metric name is added
# here so S11's group reads it.
METRIC_NAMES = ("s1.mkt_throughput", "s1.ws_rtt", "s2.regime_latency", "s3.model_auc", "s3.model_brier",
                "s8.autopsy_latency")


def _streams(_settings) -> list[str]:
    return [keys.HEALTH_TIMERS, keys.ALERTS, keys.OPS_EVENTS, *(keys.metrics_stream(n) for n in METRIC_NAMES)]


def _alert_lock(env) -> str:
    p = env.payload
    if isinstance(p, Alert):
        return f"s11:alert:{alerts.dedup_key(p.code, env.account_id, dict(p.context))}"
    return f"s11:alert:ops:{p.kind}:{env.account_id}"


ROUTES = {
    MetricEvent: Route(series.on_metric, lock=series.lock_scope, idem=None),  # the bucket de-duplicates
    Alert: Route(alerts.on_alert, lock=_alert_lock, idem=None),  # the document de-duplicates
    OpsEvent: Route(alerts.on_ops_event, lock=_alert_lock, idem=None),
    TimerFired: Route(account_risk.timers(tick.on_tick), lock=lambda _env: "s11:grade"),
}

SPEC = HandlerSpec(role="s11", streams=_streams, routes=ROUTES, on_start=account_risk.starts(tick.on_start),
                   description="S11 metrics and health: metrics_timeseries, strategy_metrics_daily, alerts, "
                               "the health grade in prod:{health}:system:state")
