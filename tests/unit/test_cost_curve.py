"""B10 cost curve: the fit recovers a known slip_bps = g(spread, depth, vol, regime) from synthetic fills
stored as S4 books them (book at send, slippage) joined to their intents' signals; S4's policy function;
the draft bundle carries the curve in router.curves through lint and dry-run."""

from __future__ import annotations

import random

import pytest

from chimera.errors import PermanentError
from chimera.handlers.config import curves, service
from chimera.store import open_store
from chimera.store.collections import CONFIG_BUNDLES, FILLS, ORDER_INTENTS, SIGNALS

TRUE = {"const": 0.8, "spread_bp": 0.45, "size_to_depth": 12.0, "vol_bp": 0.03, "regime_EXTREME": 2.5,
        "regime_FROZEN": 0.0}
T0 = 1_751_328_000_000  # 2025-07-01


def _store_fills(store, n: int, seed: int = 11) -> None:
    rnd = random.Random(seed)
    for i in range(n):
        spread = rnd.uniform(0.2, 6.0)
        depth_ratio = rnd.uniform(0.01, 0.4)
        atr_pct = rnd.uniform(0.0005, 0.006)
        regime = "EXTREME" if i % 4 == 0 else "NORMAL"
        mid = 60000.0
        bid, ask = mid * (1 - spread / 20_000), mid * (1 + spread / 20_000)
        asks = [[ask, 1.0], [ask + 0.1, 1.0], [ask + 0.2, 1.0]]
        depth = sum(p * q for p, q in asks)
        qty = depth_ratio * depth / ask
        slip = (TRUE["const"] + TRUE["spread_bp"] * spread + TRUE["size_to_depth"] * depth_ratio
                + TRUE["vol_bp"] * atr_pct * 10_000 + TRUE["regime_EXTREME"] * (regime == "EXTREME")
                + rnd.gauss(0, 0.05))
        sid, iid = f"BTCUSDT:{T0 + i}", f"it-{i}"
        store.upsert(SIGNALS, sid, {"symbol": "BTCUSDT", "t0": T0 + i, "features": {"atr_pct": atr_pct},
                                    "decision": {"regime": regime}})
        store.upsert(ORDER_INTENTS, iid, {"intent_id": iid, "signal_id": sid, "created_at": T0 + i})
        store.upsert(FILLS, f"{iid}:1", {
            "trade_id": f"t{i}", "intent_id": iid, "leg": "entry", "side": "BUY", "qty": repr(qty), "price": repr(ask),
            "is_maker": False, "mid_at_send": repr(mid), "slippage_bps": slip, "ts": T0 + i,
            "top3_at_send": {"bids": [[bid, 1.0], [bid - 0.1, 1.0], [bid - 0.2, 1.0]], "asks": asks}})
    # A maker fill and a fill without its book are not taker-cost samples.
    store.upsert(FILLS, "maker", {"intent_id": "x", "side": "BUY", "is_maker": True, "slippage_bps": 0.0, "ts": T0})
    store.upsert(FILLS, "nobook", {"intent_id": "x", "side": "BUY", "slippage_bps": 9.0, "ts": T0})


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path}/s.sqlite")


def test_ols_fit_recovers_the_known_curve(store):
    _store_fills(store, 400)
    rows = curves.rows_from_store(store, T0, T0 + 10_000)
    assert len(rows) == 400
    got = curves.fit(rows)
    assert got["n"] == 400 and got["method"] == "OLS" and got["r2"] > 0.99
    for term, want in TRUE.items():
        assert got["coef"][term] == pytest.approx(want, abs=0.05 + 0.02 * abs(want)), term
    q = curves.fit(rows, quantile=0.5)  # the median line of symmetric noise is the same curve
    assert q["coef"]["size_to_depth"] == pytest.approx(12.0, abs=0.5) and q["method"] == "QuantReg q=0.5"


def test_too_few_fills_and_bad_quantile_are_refused(store):
    _store_fills(store, 10)
    with pytest.raises(PermanentError, match="10 usable taker fills < 30"):
        curves.fit(curves.rows_from_store(store, T0, T0 + 10_000))
    with pytest.raises(PermanentError, match="quantile 1.5"):
        curves.fit([(1.0, 0.1, 5.0, 0.0, 0.0, 1.0)] * 40, quantile=1.5)


def test_router_params_from_curve():
    c = {"coef": TRUE}
    # s = 0.8 + 0.45*2 + 12*0.1 + 0.03*20 = 3.5 bps -> wait 500*3.5 = 1750 ms, taker share 1 - 3.5/10 = 0.65
    assert curves.router_params(c, spread_bp=2, size_to_depth=0.1, vol_bp=20) == (1750, 0.65)
    # EXTREME adds 2.5 -> 6.0 bps -> 3000 ms, 0.4
    assert curves.router_params(c, spread_bp=2, size_to_depth=0.1, vol_bp=20, regime="extreme") == (3000, 0.4)
    assert curves.router_params(None, spread_bp=2, size_to_depth=0.1, vol_bp=20) == (3000, 0.0)
    assert curves.router_params(c, spread_bp=100, size_to_depth=1, vol_bp=100) == (15000, 0.0)  # capped


def test_fit_goes_into_a_draft_bundle(store):
    _store_fills(store, 60)
    inc = service.create(store, {"bundle_id": "live", "strategy": {"rules": []}}, now_ms=T0 + 10_000)
    service.switch_active(store, inc.bundle_id, inc.rev)
    fitted = curves.fit(curves.rows_from_store(store, T0, T0 + 10_000))
    draft = curves.draft_bundle(store, fitted, now_ms=T0 + 20_000, source="costfit:2025-07")
    doc = store.get(CONFIG_BUNDLES, f"live:{draft.rev}")
    assert draft.rev == 2 and doc["status"] == "DRAFT" and doc["lint"]["ok"] and doc["source"] == "costfit:2025-07"
    assert doc["body"]["router"]["curves"]["coef"] == fitted["coef"]
    assert service.active(store) == {"bundle_id": "live", "rev": 1}  # a draft never activates by itself
