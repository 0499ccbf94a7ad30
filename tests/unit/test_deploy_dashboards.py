"""Grafana dashboards: valid JSON with unique panel ids, and every metric a panel queries exists:
defined in chimera/ (the names the metric lint finds), recorded by the rule file, or Prometheus' own
``up``. A renamed metric therefore breaks this test instead of leaving an empty panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.unit.test_metric_names import registry_metrics, source_metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
PROMQL_WORDS = {"sum", "max", "min", "avg", "by", "rate", "increase", "histogram_quantile", "label_values", "time",
                "absent", "or", "and", "without", "le", "on", "ignoring"}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and (n.startswith("chimera") or n == "up")}


def known() -> set[str]:
    found = {**source_metrics(), **registry_metrics()}
    names = set(found)
    for name, (kind, _labels) in found.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "chimera-rules.yaml").read_text())
    names |= {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return names | {"up"}


def test_four_dashboards_with_unique_panels():
    assert {p.name for p in DASHBOARDS} == {"overview.json", "execution.json", "risk.json", "account.json"}
    uids = set()
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        uids.add(doc["uid"])
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)) and len(ids) >= 3, path.name
        assert all(p["targets"] for p in doc["panels"]), path.name
    assert len(uids) == len(DASHBOARDS)


def test_every_queried_metric_exists():
    have = known()
    missing = {}
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
        exprs += [v["definition"] for v in doc["templating"]["list"] if v.get("definition")]
        for expr in exprs:
            for name in metric_names(expr) - have:
                missing.setdefault(path.name, set()).add(name)
    assert not missing, f"dashboards query metrics nobody exports: {missing}"


def test_the_check_sees_a_missing_metric():
    assert metric_names('sum by (role) (rate(chimera_nope_total{role="s4"}[5m]))') == {"chimera_nope_total"}
    assert "chimera_nope_total" not in known()
