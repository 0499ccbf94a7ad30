"""S10 simulate: candidate vs active in-process backtests on one window of the shipped real data (KPI
table side by side) and the ±eps sensitivity; the entry threshold's flip_pct is checked against a count
of the window's signals whose atr_pct lies in the moved band. Stored in ``simulations``."""

from __future__ import annotations

import math

import pytest

from chimera.handlers.config import service, simulate
from chimera.store import open_store
from chimera.store.collections import SIMULATIONS

P = 0.0008
WINDOW = ("2025-07-07T00:00", "2025-07-07T01:30")


def _bundle(bundle_id: str, threshold: float) -> dict:
    return {"bundle_id": bundle_id, "strategy": {
        "symbols": ["BTCUSDT", "ETHUSDT"], "entry": {"long_when": f"atr_pct > {threshold}"},
        "rules": [{"id": "calm", "when": "rv_15 < 0.0004", "then": {"size_mult": 0.5}}],
        "risk": {"fut_margin_budget_usdt": "1000", "max_per_symbol": 1, "max_open_positions": 4},
        "sizing": {"market": "FUT", "leverage": 20, "margin_usdt": "20", "exec_policy": "MARKET"}}}


@pytest.mark.timeout(600)
def test_simulate_kpis_side_by_side_and_flip_pct(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.sqlite")
    inc = service.create(store, _bundle("inc", 0.0012), now_ms=0)
    service.switch_active(store, inc.bundle_id, inc.rev)
    cand = service.create(store, _bundle("cand", P), now_ms=0)
    doc = simulate.simulate(store, "cand", cand.rev, data=["sample"], from_text=WINDOW[0], to_text=WINDOW[1],
                            eps=0.1, now_ms=1, by="alice")
    assert store.get(SIMULATIONS, doc["sim_id"])["robustness"] == doc["robustness"]
    table = {row["kpi"]: row for row in doc["kpis"]}
    assert table["bars"]["active"] == table["bars"]["candidate"] == 2 * 90  # two symbols, 90 one-minute bars
    assert table["trades"]["active"] is not None and table["trades"]["candidate"] is not None
    # The same window's signals, as S2 computed them in the backtest.
    _kpis, sigs = simulate.backtest_kpis(cand.body, "cand", 1, ["sample"], *WINDOW)
    n = len(sigs)
    vals = [s.features.get("atr_pct") for s in sigs]
    vals = [v for v in vals if isinstance(v, float) and not math.isnan(v)]
    below = sum(1 for v in vals if P * 0.9 < v <= P)  # sided at P - 10 %, not at P
    above = sum(1 for v in vals if P < v <= P * 1.1)  # sided at P, not at P + 10 %
    rows = {r["param"]: r for r in doc["sensitivity"]["params"]}
    entry = rows["entry.long_when#0"]
    assert doc["sensitivity"]["signals"] == n
    assert entry["flip_pct"] == pytest.approx(max(below, above) / n, abs=1e-6) and entry["flip_pct"] > 0
    k0 = doc["sensitivity"]["kpi_base"]
    assert entry["lipschitz"] == pytest.approx(max(abs(entry["kpi_minus"] - k0), abs(entry["kpi_plus"] - k0))
                                               / (P * 0.1), rel=1e-6)
    assert doc["robustness"] == pytest.approx(1 - max(r.get("flip_pct", 0.0) for r in rows.values()), abs=1e-6)
