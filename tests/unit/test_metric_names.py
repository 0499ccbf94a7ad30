"""Lint every Prometheus metric Chimera defines (ARCHITECTURE §9): ``chimera_`` prefix, snake case,
base units (seconds, bytes, ratios), counters end in ``_total`` and nothing else does, no reserved
suffixes on gauges, and no per-order / per-client identifiers as labels (unbounded cardinality).

Two sources, so a metric built per scrape (the gateway's router gauges) is linted too:
the default registry after importing every ``chimera`` module, and the source text (every string
literal passed as the name of a Counter/Gauge/Histogram/Summary, or used as a ``chimera_...`` key
next to such a call).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge

import chimera

NAME = re.compile(r"^chimera_[a-z][a-z0-9_]*[a-z0-9]$")
NON_BASE_UNITS = {"ms", "millis", "milliseconds", "us", "micros", "microseconds", "ns", "minutes", "mins", "hours",
                  "days", "percent", "pct", "kb", "mb", "gb", "kilobytes", "megabytes", "gigabytes"}
RESERVED_SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created", "_info")
# Identifiers of one order, trade or request: a label per value would make a series per order.
FORBIDDEN_LABELS = {"order_id", "client_order_id", "orig_client_order_id", "venue_order_id", "intent_id", "pos_id",
                    "position_id", "trade_id", "signal_id", "transfer_id", "entry_id", "correlation_id",
                    "causation_id", "idempotency_key", "request_id", "client_id", "user_id", "id"}
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary",
         # Custom collectors (the gateway's router figures, read from Redis per scrape).
         "CounterMetricFamily": "counter", "GaugeMetricFamily": "gauge"}

# Known violations, each with its owner: the test fails when one is fixed (so it leaves this list) or
# when a new one appears. Do not add to it; fix the metric.
KNOWN: dict[str, str] = {}


def lint(name: str, kind: str, labels: tuple[str, ...]) -> list[str]:
    out = []
    if not NAME.match(name):
        out.append(f"{name}: must match {NAME.pattern}")
    for token in name.split("_")[1:]:
        if token in NON_BASE_UNITS:
            out.append(f"{name}: unit {token!r} is not a base unit (use _seconds)"
                       if token in {"ms", "millis", "milliseconds", "us", "micros", "microseconds", "ns", "minutes",
                                    "mins", "hours", "days"} else f"{name}: unit {token!r} is not a base unit")
    if kind == "counter":
        if not name.endswith("_total"):
            out.append(f"{name}: a counter must end in _total")
    else:
        for suffix in RESERVED_SUFFIXES:
            if name.endswith(suffix):
                out.append(f"{name}: a {kind} must not end in a reserved suffix ({suffix})")
    for label in labels:
        if label in FORBIDDEN_LABELS or (label.endswith("_id") and label not in ("account_id", "bundle_id")):
            out.append(f"{name}: label {label!r} identifies one order/request (unbounded cardinality)")
    return out


def _import_all() -> None:
    for mod in pkgutil.walk_packages(chimera.__path__, "chimera."):
        try:
            importlib.import_module(mod.name)
        except ImportError:
            continue  # optional backends (e.g. a driver not installed) define no metrics


def registry_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    _import_all()
    out = {}
    for collector in list(prometheus_client.REGISTRY._collector_to_names):  # noqa: SLF001 - the lint needs it
        name, kind = getattr(collector, "_name", None), getattr(collector, "_type", None)
        if name is None or kind is None:
            continue  # process/platform/gc collectors of prometheus_client itself
        full = name + "_total" if kind == "counter" else name
        out[full] = (kind, tuple(getattr(collector, "_labelnames", ())))
    return out


def source_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for path in Path(chimera.__path__[0]).rglob("*.py"):
        text = path.read_text()
        if "prometheus_client" not in text:
            continue
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if fn in KINDS and node.args and isinstance(node.args[0], ast.Constant) \
                        and isinstance(node.args[0].value, str):
                    labels: tuple[str, ...] = ()
                    if len(node.args) > 2 and isinstance(node.args[2], ast.List | ast.Tuple):
                        labels = tuple(e.value for e in node.args[2].elts if isinstance(e, ast.Constant))
                    out[node.args[0].value] = (KINDS[fn], labels)
            if isinstance(node, ast.Dict):
                # ``{"chimera_x": (doc, value)}`` fed to Gauge(name, ...) per scrape: gauges.
                for k in node.keys:
                    if isinstance(k, ast.Constant) and isinstance(k.value, str) and k.value.startswith("chimera_"):
                        out.setdefault(k.value, ("gauge", ()))
    return out


def violations() -> set[str]:
    found = {**source_metrics(), **registry_metrics()}
    assert len(found) >= 5, f"the lint found almost no metrics ({sorted(found)}): it is not looking"
    return {v for name, (kind, labels) in found.items() for v in lint(name, kind, labels)}


def test_every_chimera_metric_follows_the_naming_rules():
    got = violations()
    new = got - set(KNOWN)
    fixed = set(KNOWN) - got
    assert not new, "metric naming violations:\n" + "\n".join(sorted(new))
    assert not fixed, "fixed, remove from KNOWN:\n" + "\n".join(sorted(fixed))


def test_the_lint_catches_bad_metrics():
    reg = CollectorRegistry()
    Counter("chimera_orders", "no _total", ["client_order_id"], registry=reg)
    Gauge("chimera_latency_ms", "wrong unit", registry=reg)
    Gauge("orders_open", "no prefix", registry=reg)
    bad = [v for c in reg._collector_to_names for v in lint(  # noqa: SLF001
        c._name + ("_total" if c._type == "counter" else ""), c._type, tuple(c._labelnames))]  # noqa: SLF001
    assert any("label 'client_order_id'" in v for v in bad)
    assert any("unit 'ms'" in v for v in bad)
    assert any("orders_open: must match" in v for v in bad)
    assert lint("chimera_orders", "counter", ()) == ["chimera_orders: a counter must end in _total"]
    assert lint("chimera_health_level", "gauge", ("account_id",)) == []


def test_health_metrics_are_exported():
    found = registry_metrics()
    assert found["chimera_health_level"] == ("gauge", ())
    assert found["chimera_health_graded_timestamp_seconds"][0] == "gauge"
    assert found["chimera_entries_total"] == ("counter", ("role", "outcome"))
