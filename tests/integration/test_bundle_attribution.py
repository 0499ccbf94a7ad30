"""Every decision's orders and positions carry the bundle id and rev that made them (issue 14: results are
attributed to a bundle rev). The sample bundle over a real day through S2 -> S3 -> S4 -> S6 in-process."""

from __future__ import annotations

import json
from pathlib import Path

from chimera.backtest.data import load
from chimera.backtest.runner import run
from chimera.store.collections import ORDER_INTENTS, POSITIONS, STRATEGY_EVENTS

BUNDLE = Path(__file__).resolve().parents[2] / "chimera" / "bundles" / "sample_vol_breakout.json"


def test_intents_and_positions_carry_the_deciding_bundle_and_rev():
    ds = load(["sample"], "2025-07-06", "2025-07-07")
    out = run(json.loads(BUNDLE.read_text()), ds.feed, ds.symbols, bundle_id="attrib-test", rev=7)
    positions = out.store.query(POSITIONS, {})
    entries = [d for d in out.store.query(ORDER_INTENTS, {}) if d["purpose"] == "ENTRY"]
    opens = [d for d in out.store.query(STRATEGY_EVENTS, {}) if d.get("kind") == "OPEN_DECIDED"]
    assert positions and entries and len(opens) == len(entries)
    assert {(p["bundle_id"], p["config_rev"]) for p in positions} == {("attrib-test", 7)}
    assert {(d["bundle_id"], d["config_rev"]) for d in entries} == {("attrib-test", 7)}
    assert {p["entry_intent_id"] for p in positions} == {d["intent_id"] for d in entries}
    stops = [d for d in out.store.query(ORDER_INTENTS, {}) if d["purpose"] == "STOP"]
    assert stops and {(d["bundle_id"], d["config_rev"]) for d in stops} == {("attrib-test", 7)}  # S6's stops too
