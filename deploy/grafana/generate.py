"""Writes the Grafana dashboards (JSON, schemaVersion 39) next to this file.

    python deploy/grafana/generate.py      # then commit the JSON
                                           # (tests/unit/test_deploy_k8s.py: up to date; test_deploy_dashboards.py: every queried metric exists)

Each dashboard reads the ``prometheus`` datasource chosen by the ``datasource`` variable, as
kube-prometheus-stack's Grafana sidecar imports it (ConfigMap label ``grafana_dashboard: "1"``).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(pid: int, title: str, exprs: list[tuple[str, str]], *, kind: str = "timeseries", unit: str = "short",
          x: int = 0, y: int = 0, w: int = 12, h: int = 8, thresholds: list | None = None) -> dict:
    p = {"id": pid, "type": kind, "title": title, "datasource": DS, "gridPos": {"x": x, "y": y, "w": w, "h": h},
         "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": legend, "datasource": DS}
                     for i, (e, legend) in enumerate(exprs)],
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
    return p


HEALTH_STEPS = [{"color": "green", "value": None}, {"color": "yellow", "value": 1}, {"color": "orange", "value": 2},
                {"color": "red", "value": 3}]
HEALTH_MAP = [{"type": "value", "options": {"0": {"text": "GREEN"}, "1": {"text": "YELLOW"},
                                             "2": {"text": "ORANGE"}, "3": {"text": "RED"}}}]


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict] | None = None) -> dict:
    templating = [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
    return {"uid": uid, "title": title, "tags": ["chimera"], "schemaVersion": 39, "version": 1, "editable": False,
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "utc",
            "templating": {"list": templating + (variables or [])}, "panels": panels, "annotations": {"list": []}}


def overview() -> dict:
    health = panel(1, "System health (S11)", [("max(chimera_health_level)", "grade")], kind="stat", w=6,
                   thresholds=HEALTH_STEPS)
    health["fieldConfig"]["defaults"]["mappings"] = HEALTH_MAP
    return dashboard("chimera-overview", "Chimera / Overview", [
        health,
        panel(2, "Grade age", [("chimera:health_age_seconds", "age")], kind="stat", unit="s", x=6, w=6),
        panel(3, "Open alerts by level", [("sum by (level) (chimera_alerts_open)", "{{level}}")], kind="stat", x=12,
              w=12),
        panel(4, "Entries handled / s by role", [("sum by (role) (chimera:entries:rate5m)", "{{role}}")], y=8),
        panel(5, "Retries and dead letters / s", [("sum by (role, outcome) (chimera:entries:rate5m{outcome=~\"retry|dead\"})",
                                                   "{{role}} {{outcome}}")], x=12, y=8),
        panel(6, "Handle time p95 by role", [("chimera:handle_seconds:p95_5m", "{{role}}")], unit="s", y=16),
        panel(7, "Targets up", [("up{job=~\"chimera.*\"}", "{{job}} {{instance}}")], x=12, y=16),
    ])


def execution() -> dict:
    return dashboard("chimera-execution", "Chimera / Execution (S4)", [
        panel(1, "Maker fill ratio", [("chimera_maker_fill_ratio", "fill ratio")], unit="percentunit", w=8),
        panel(2, "Router command -> ack p95", [("chimera_router_ack_p95_seconds", "p95")], unit="s", x=8, w=8),
        panel(3, "Maker windows expired / h", [("increase(chimera_maker_timeouts_total[1h])", "timeouts")], x=16, w=8),
        panel(4, "Router handle time p95", [("chimera:handle_seconds:p95_5m{role=\"s4\"}", "s4")], unit="s", y=8),
        panel(5, "Router entries / s", [("sum by (outcome) (chimera:entries:rate5m{role=\"s4\"})", "{{outcome}}")],
              x=12, y=8),
        panel(6, "Graded signals (S11)", [("chimera_health_signal{signal=~\"maker_fill_ratio|reject_rate|router_p95_ms\"}",
                                           "{{signal}}")], y=16, w=24),
    ])


def risk() -> dict:
    return dashboard("chimera-risk", "Chimera / Risk and health", [
        panel(1, "Health grade", [("max(chimera_health_level)", "grade")], thresholds=HEALTH_STEPS, w=24),
        panel(2, "Every graded signal", [("chimera_health_signal", "{{signal}}")], y=8),
        panel(3, "Stream backlog (worst group)", [("chimera_health_signal{signal=\"stream_lag\"}", "entries")], x=12, y=8),
        panel(4, "Reconcile inconsistent", [("chimera_health_signal{signal=\"reconcile_inconsistent\"}", "S5")],
              kind="stat", y=16, w=8),
        panel(5, "Drawdown today", [("chimera_health_signal{signal=\"drawdown_pct\"}", "drawdown")],
              unit="percentunit", kind="stat", x=8, y=16, w=8),
        panel(6, "Dead letters (10 min)", [("sum by (group) (chimera:dead_letters:increase10m)", "{{group}}")],
              x=16, y=16, w=8),
        panel(7, "Net PnL today by bundle", [("sum by (bundle_id) (chimera_strategy_net_pnl_today_usdt)",
                                              "{{bundle_id}}")], unit="currencyUSD", y=24),
        panel(8, "Trades today by bundle", [("sum by (bundle_id) (chimera_strategy_trades_today)", "{{bundle_id}}")],
              x=12, y=24),
    ])


def account() -> dict:
    var = {"name": "account_id", "type": "query", "datasource": DS, "refresh": 2, "includeAll": True,
           "query": {"query": "label_values(chimera_alerts_open, account_id)", "refId": "accounts"},
           "definition": "label_values(chimera_alerts_open, account_id)"}
    return dashboard("chimera-account", "Chimera / Per account", [
        panel(1, "Open alerts", [("sum by (level) (chimera_alerts_open{account_id=~\"$account_id\"})", "{{level}}")],
              kind="stat", w=12),
        panel(2, "Open alerts over time", [("chimera_alerts_open{account_id=~\"$account_id\"}",
                                            "{{account_id}} {{level}}")], x=12, w=12),
        panel(3, "Net PnL today by symbol", [("sum by (symbol) (chimera_strategy_net_pnl_today_usdt)", "{{symbol}}")],
              unit="currencyUSD", y=8, w=24),
    ], [var])


DASHBOARDS = {"overview.json": overview, "execution.json": execution, "risk.json": risk, "account.json": account}


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2, sort_keys=True) + "\n" for name, fn in DASHBOARDS.items()}


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
