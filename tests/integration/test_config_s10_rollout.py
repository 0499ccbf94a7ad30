"""The rollout's transition table, guardrails and analysis verdicts (pure functions), and the
``chimera bundles lint`` command line (exit status, file and position in the message)."""

from __future__ import annotations

import subprocess
import sys

from chimera.handlers.config import rollout
from chimera.handlers.config.rollout import (
    FAILED,
    INCONCLUSIVE,
    SUCCESSFUL,
    Governance,
    analyze_live,
    next_state,
)

NAN = float("nan")
GOOD = {"orders": 10, "reject_rate": 0.0, "maker_sent": 4, "maker_fill_ratio": 0.75, "slippage_bps": 1.2,
        "drawdown_pct": 0.5, "incumbent_drawdown_pct": 0.4}


def test_transition_table():
    path, state = [], "PENDING"
    for event in ("GUARDS_PASSED", *[SUCCESSFUL] * 5):
        state = next_state(state, event)
        path.append(state)
    assert path == ["SHADOW", "CANARY", "RAMP_10", "RAMP_50", "RAMP_100", "PROMOTED"]
    assert next_state("RAMP_50", FAILED) == "ROLLED_BACK"
    assert next_state("RAMP_50", INCONCLUSIVE) == "PAUSED"
    assert next_state("PAUSED", "RESUME", "RAMP_50") == "RAMP_50"
    assert next_state("PAUSED", "ABORT") == "ROLLED_BACK"
    assert next_state("PAUSED", SUCCESSFUL) is None  # a paused rollout never promotes by itself
    assert next_state("PROMOTED", "ABORT") is None and next_state("ROLLED_BACK", "RESUME") is None


def test_live_analysis_verdicts():
    gov = Governance()
    assert analyze_live(gov, GOOD) == (SUCCESSFUL, [])
    verdict, why = analyze_live(gov, {**GOOD, "slippage_bps": NAN})
    assert verdict == INCONCLUSIVE and why == ["slippage_bps is missing or NaN"]
    assert analyze_live(gov, {**GOOD, "orders": 0})[0] == INCONCLUSIVE
    assert analyze_live(gov, {**GOOD, "incumbent_drawdown_pct": None})[0] == INCONCLUSIVE
    verdict, why = analyze_live(gov, {**GOOD, "reject_rate": 0.5, "slippage_bps": NAN})
    assert verdict == FAILED and why == ["reject_rate 0.500 > 0.2"]  # a breach fails even beside a NaN
    assert analyze_live(gov, {**GOOD, "maker_fill_ratio": 0.1})[0] == FAILED
    assert analyze_live(gov, {**GOOD, "drawdown_pct": 3.0})[1] == [
        "drawdown 3.00% exceeds the incumbent's by 2.60 points"]
    # No maker legs rested: the maker fill ratio is not judged (and its NaN is not missing data).
    assert analyze_live(gov, {**GOOD, "maker_sent": 0, "maker_fill_ratio": NAN}) == (SUCCESSFUL, [])


def test_guardrails_and_governance_from_bundle():
    gov = Governance.from_bundle({"governance": {"max_delta_trades_pct": 0.2, "rollout": {"canary_size_pct": 2}}})
    assert gov.max_delta_trades_pct == 0.2 and gov.canary_size_pct == 2
    ok, reasons, figures = rollout.guardrails(gov, {"opens_active": 10, "delta_trades": -3,
                                                    "override_rate_candidate": 0.9}, robustness=float("nan"))
    assert not ok and figures["delta_trades_pct"] == 0.3
    assert reasons == ["delta_trades 30.00% of the active opens > 20.00%", "rule override rate 90.00% > 80.00%",
                       "robustness nan < 0.500"]
    assert rollout.guardrails(gov, {"opens_active": 10, "delta_trades": 1}, robustness=0.9)[0]
    body = rollout.stage_body({"strategy": {"sizing": {"margin_usdt": "20"}}}, "CANARY", gov, "pr-1")
    assert body["strategy"]["sizing"]["margin_usdt"] == "0.4" and body["rollout"]["stage"] == "CANARY"


def test_cli_lint_names_file_and_position(tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text('{"strategy": {\n  "rules": [{"id": "r1", "when": "atr_pct > 0.1 or", "then": {"size_mult": 2}}]}}')
    res = subprocess.run([sys.executable, "-m", "chimera.ops.cli", "bundles", "lint", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    # "or" at offset 16 of when; when starts at column 35 of line 2 -> column 51.
    assert f"{bad}:2:51: error E_RULE [rule r1] strategy.rules[0].when:" in res.stderr
    assert "1 error(s), 1 warning(s)" in res.stderr and "W_SIZE_MULT_GT_1" in res.stdout
    ok = subprocess.run([sys.executable, "-m", "chimera.ops.cli", "bundles", "lint",
                         "chimera/bundles/sample_vol_breakout.json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "ok (0 warning(s))" in ok.stdout
