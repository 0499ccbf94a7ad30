"""S2's ``sma_<n>`` features and the previous bar's values, checked against pandas and ``ta``
computed here from the shipped BTCUSDT 1m sample (no Redis: the in-process runtime)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from ta.trend import sma_indicator

from chimera.errors import PermanentError
from chimera.handlers.features.engine import Bar, FeatureConfig, FeatureEngine
from chimera.handlers.features.role import SPEC
from chimera.handlers.features.toolkit import feature_config
from chimera.handlers.strategy.bundle import rule_fields
from chimera.handlers.strategy.dsl import compile_rules
from chimera.handlers.strategy.dsl_expr import PREV
from chimera.handlers.strategy.replay import _bars
from chimera.schemas.messages import Kline
from chimera.store import open_store
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig, activate
from chimera.workers.handler import Context
from chimera.workers.inprocess import InProcessRuntime

N = 3000
BARS = _bars("BTCUSDT", N)
CLOSES = pd.Series([b.close for b in BARS])


def _kline(b: Bar) -> Kline:
    return Kline(market="perp", symbol="BTCUSDT", interval="1m", open_time=b.open_time, close_time=b.open_time + 59_999,
                 open=b.open, high=b.high, low=b.low, close=b.close, volume=b.volume)


def test_sma_equals_pandas_and_ta_rolling_means_and_prev_is_the_previous_bar():
    eng = FeatureEngine.new("BTCUSDT", FeatureConfig(sma_windows=(20, 60)))
    snaps = [eng.on_bar(b) for b in BARS]
    for w in (20, 60):
        want = CLOSES.rolling(w).mean()
        also = sma_indicator(CLOSES, window=w)
        got = [s.features[f"sma_{w}"] for s in snaps]
        assert got[:w - 1] == [None] * (w - 1)
        assert all("warming_up" in s.flags[f"sma_{w}"] for s in snaps[:w - 1])
        for i in range(w - 1, N):
            assert math.isclose(got[i], want[i], rel_tol=1e-12) and math.isclose(got[i], also[i], rel_tol=1e-12), i
            assert f"sma_{w}" not in snaps[i].flags or snaps[i].flags[f"sma_{w}"] == ["outlier"]
    assert snaps[0].prev == {}
    for before, now in zip(snaps, snaps[1:], strict=False):
        assert now.prev["sma_20"] == before.features["sma_20"] and now.prev["atr"] == before.features["atr"]
        assert "mid" not in now.prev  # only bar features have a previous bar


def test_sma_survives_the_state_cache_and_flags_a_hole_in_its_window():
    cfg = FeatureConfig(sma_windows=(5,))
    eng = FeatureEngine.new("BTCUSDT", cfg)
    for b in BARS[:10]:
        eng.on_bar(b)
    eng = FeatureEngine.from_bytes(eng.to_bytes(), cfg)  # a new owner resumes from the cache
    snap = eng.on_bar(BARS[10])
    assert math.isclose(snap.features["sma_5"], CLOSES[6:11].mean(), rel_tol=1e-12)
    assert snap.prev["sma_5"] is not None
    hole = BARS[13]  # bars 11 and 12 never arrive
    snap = eng.on_bar(hole)
    assert math.isclose(snap.features["sma_5"], (CLOSES[7:11].sum() + hole.close) / 5, rel_tol=1e-12)
    assert "gap" in snap.flags["sma_5"]
    with pytest.raises(ValueError, match="another config"):
        FeatureEngine.from_bytes(eng.to_bytes(), FeatureConfig(sma_windows=(5, 20)))


@pytest.mark.parametrize("windows", [(1,), (0,), (20_000,), (True,)])
def test_bad_sma_windows_are_a_clear_permanent_error(windows):
    ctx = Context(clock=ManualClock(0), store=None, config=ActiveConfig("b", 1, {"features": {"sma_windows": windows}}))
    with pytest.raises(PermanentError, match="sma_windows"):
        feature_config(ctx)


def test_s2_in_process_publishes_sma_and_prev_and_a_crossing_rule_fires_where_pandas_crosses():
    store = open_store("sqlite://:memory:")
    activate(store, "sma", 1, {"bundle_id": "sma", "features": {"sma_windows": [20, 60]}})
    rt = InProcessRuntime([SPEC], store=store, settings=_settings(), clock=ManualClock(0))
    for b in BARS:
        rt.publish(keys.mkt_stream("perp", "BTCUSDT"), _kline(b), f"k{b.open_time}", event_time=b.open_time + 59_999)
    rt.run()
    assert not rt.dead
    msgs = [e.payload for e in rt.entries(keys.feat_stream("BTCUSDT"))]
    assert len(msgs) == N
    fields = rule_fields({"sma_windows": [20, 60]})
    up = compile_rules([{"id": "up", "when": "sma_20 crosses_above sma_60", "then": {"size_mult": 1}}], fields)
    down = compile_rules([{"id": "dn", "when": "sma_20 crosses_below sma_60", "then": {"size_mult": 1}}], fields)
    fired_up = [i for i, m in enumerate(msgs) if up.evaluate({**m.features, PREV: m.prev}).fired]
    fired_down = [i for i, m in enumerate(msgs) if down.evaluate({**m.features, PREV: m.prev}).fired]

    fast, slow = CLOSES.rolling(20).mean(), CLOSES.rolling(60).mean()
    want_up = list(CLOSES.index[(fast.shift(1) < slow.shift(1)) & (fast > slow)])
    want_down = list(CLOSES.index[(fast.shift(1) > slow.shift(1)) & (fast < slow)])
    assert want_up and want_down  # the sample crosses both ways
    assert (fired_up, fired_down) == (want_up, want_down)
    # The signal documents keep the previous bar's values for a Decide replayed later.
    doc = store.get("signals", msgs[want_up[0]].signal_id)
    assert doc["prev"]["sma_20"] < doc["prev"]["sma_60"] and doc["features"]["sma_20"] > doc["features"]["sma_60"]


def _settings():
    from types import SimpleNamespace

    return SimpleNamespace(symbols=("BTCUSDT",), extra={})
