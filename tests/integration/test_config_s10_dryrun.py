"""S10 create/dry-run on recorded signals: the decision diff against a hand computation, and the
stored bundle document (lint + dry-run) in ``config_bundles``."""

from __future__ import annotations

import pytest

from chimera.errors import PermanentError
from chimera.handlers.config import service
from chimera.store import open_store
from chimera.store.collections import CONFIG_BUNDLES, SIGNALS

T0 = 1_751_760_000_000  # 2025-07-06 00:00 UTC (a Sunday)
LIMITS = {"fut_margin_budget_usdt": "100000", "max_per_symbol": 1000, "max_open_positions": 1000}


def _bundle(bundle_id: str, long_when: str, skip_above: float) -> dict:
    return {"bundle_id": bundle_id, "strategy": {
        "symbols": ["BTCUSDT"], "entry": {"long_when": long_when},
        "rules": [{"id": "too_wild", "when": f"atr_pct > {skip_above}", "then": {"skip_entry": True}}],
        "risk": LIMITS, "sizing": {"market": "FUT", "leverage": 20, "margin_usdt": "20", "exec_policy": "MARKET"}}}


ACTIVE = _bundle("inc", "atr_pct > 0.001", 0.005)
CANDIDATE = _bundle("cand", "atr_pct > 0.002", 0.004)
ATR_PCT = [0.0005, 0.0015, 0.0025, 0.0035, 0.0045, 0.0055]


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/store.sqlite")
    for i, a in enumerate(ATR_PCT):  # as S2 records them (signal_doc): features, prev, t0
        sid = f"BTCUSDT:{T0 + i * 60_000}"
        s.upsert(SIGNALS, sid, {"signal_id": sid, "symbol": "BTCUSDT", "t0": T0 + i * 60_000,
                                "features": {"mid": 60000.0, "atr": 60000.0 * a, "atr_pct": a, "rv_15": 0.001},
                                "prev": {}, "config_rev": 1})
    old = T0 - 30 * 86_400_000  # outside the 7-day window: never replayed
    s.upsert(SIGNALS, "BTCUSDT:old", {"signal_id": "BTCUSDT:old", "symbol": "BTCUSDT", "t0": old,
                                      "features": {"mid": 60000.0, "atr": 120.0, "atr_pct": 0.002}, "prev": {}})
    return s


def test_dry_run_diff_matches_hand_computation(store):
    now = T0 + 3_600_000
    inc = service.create(store, ACTIVE, now_ms=now, by="alice")
    service.switch_active(store, inc.bundle_id, inc.rev)
    doc = service.create(store, CANDIDATE, now_ms=now, by="alice", source="test")
    d = doc.dry_run
    # By hand (each signal on its own):
    #   active    opens atr_pct in (0.001, 0.005]: s1 s2 s3 s4; s5 sided but skipped by too_wild; s0 no signal
    #   candidate opens atr_pct in (0.002, 0.004]: s2 s3;       s4 s5 sided but skipped;       s0 s1 no signal
    #   flipped (action or side): s1 (open -> no signal), s4 (open -> rule skip) = 2 of 6
    #   Jaccard {s2,s3} / {s1,s2,s3,s4} = 0.5; delta trades 2 - 4 = -2
    #   override rate: active 1 fired of 5 sided = 0.2; candidate 2 of 4 = 0.5
    sid = [f"BTCUSDT:{T0 + i * 60_000}" for i in range(6)]
    assert d.signals == 6 and d.active == "inc:1"
    assert (d.opens_active, d.opens_candidate, d.delta_trades) == (4, 2, -2)
    assert d.decisions_flipped == 2 and d.flipped_ids == sorted([sid[1], sid[4]])
    assert d.flipped_pct == pytest.approx(2 / 6, abs=1e-6)
    assert d.jaccard_opens == 0.5
    assert (d.override_rate_active, d.override_rate_candidate) == (0.2, 0.5)
    assert d.rule_fire_counts == {"too_wild": 2}
    assert (d.window_from_ms, d.window_to_ms) == (T0, T0 + 5 * 60_000)
    stored = store.get(CONFIG_BUNDLES, "cand:1")
    assert stored["status"] == "DRAFT" and stored["body"] == CANDIDATE and stored["lint"]["ok"] is True
    assert stored["dry_run"]["delta_trades"] == -2 and stored["created_by"] == "alice"
    # The same body again is the same document; another body under that rev is refused.
    assert service.create(store, {**CANDIDATE, "rev": 1}, now_ms=now).sha256 == doc.sha256
    with pytest.raises(PermanentError, match="immutable"):
        service.create(store, {**_bundle("cand", "atr_pct > 0.003", 0.004), "rev": 1}, now_ms=now)
    assert service.create(store, _bundle("cand", "atr_pct > 0.003", 0.004), now_ms=now).rev == 2


def test_create_refuses_lint_errors_and_writes_nothing(store):
    bad = _bundle("bad", "atr_pct >> 0.001", 0.005)
    with pytest.raises(service.BundleRejected) as exc:
        service.create(store, bad, now_ms=T0)
    (e,) = exc.value.report.errors
    assert (e.rule_id, e.path, e.expr_pos) == ("long_when", "strategy.entry.long_when", 8)
    assert store.query(CONFIG_BUNDLES, {"bundle_id": "bad"}) == []
