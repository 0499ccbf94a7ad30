"""S2 indicators on real Binance USDT-M 1m klines, checked against independent pandas/`ta`
reference computations written here (not against the module's own batch functions)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chimera.handlers.features.engine import DQ, Bar, FeatureConfig, FeatureEngine, state_from_bytes
from chimera.handlers.features.indicators import depth_notional, spread_mid

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "market" / "futures_usdm_2025-06_07"
N = 3000  # bars per run: enough for every window, quick on shared CPUs
TOL = dict(rtol=1e-9, atol=1e-12)
MIN = 60_000


def _load(sym: str) -> pd.DataFrame:
    path = DATA / f"{sym}_USDT_USDT-1m-futures.feather"
    if not path.exists():
        pytest.skip(f"market data not found: {path}")
    df = pd.read_feather(path).iloc[:N].reset_index(drop=True)
    df["t"] = df["date"].astype("int64") // 1_000_000
    return df


@pytest.fixture(scope="module")
def eth():
    return _load("ETH")


@pytest.fixture(scope="module")
def btc():
    return _load("BTC")


def bars(df):
    return [Bar(int(r.t), r.open, r.high, r.low, r.close, r.volume) for r in df.itertuples()]


def run(df, ref=None, engine=None, config=None):
    engine = engine or FeatureEngine.new("ETHUSDT", config)
    ref_rows = {} if ref is None else dict(zip(ref["t"].astype(int), ref["close"], strict=True))
    snaps = []
    for b in bars(df):
        if b.open_time in ref_rows:
            engine.on_reference_bar(b.open_time, ref_rows[b.open_time])
        snaps.append(engine.on_bar(b))
    return engine, snaps


@pytest.fixture(scope="module")
def streamed(eth, btc):
    return run(eth, btc)[1]


def column(snaps, name):
    return np.array([np.nan if s.features[name] is None else s.features[name] for s in snaps])


def flagged(snaps, name, flag):
    return np.array([flag in s.flags.get(name, ()) for s in snaps])


# ------------------------------------------------------------- references

def ref_atr_ewm(df, n):
    prev = df["close"].shift(1)
    tr = pd.concat([df["high"] - df["low"], (df["high"] - prev).abs(), (df["low"] - prev).abs()],
                   axis=1).max(axis=1)
    seeded = tr.copy()
    seeded.iloc[n - 1] = tr.iloc[:n].mean()
    out = seeded.iloc[n - 1:].ewm(alpha=1 / n, adjust=False).mean()
    return out.reindex(df.index)


def ref_log_returns(df):
    return np.log(df["close"]).diff()


# ------------------------------------------------------------------ tests

def test_atr_matches_ta_and_wilder_ewm(eth, streamed):
    ta = pytest.importorskip("ta")
    got = column(streamed, "atr")
    want_ta = ta.volatility.AverageTrueRange(eth["high"], eth["low"], eth["close"], window=14,
                                             fillna=False).average_true_range().to_numpy().copy()
    want_ta[:13] = np.nan  # ta writes zeros while warming up
    want_ewm = ref_atr_ewm(eth, 14).to_numpy()
    np.testing.assert_allclose(got, want_ta, **TOL)
    np.testing.assert_allclose(got, want_ewm, **TOL)
    np.testing.assert_allclose(column(streamed, "atr_pct"), want_ewm / eth["close"].to_numpy(), **TOL)
    assert np.isnan(got[:13]).all() and not np.isnan(got[13:]).any()
    np.testing.assert_array_equal(flagged(streamed, "atr", DQ.WARMING_UP), np.isnan(want_ewm))


@pytest.mark.parametrize("window", [15, 60, 240])
def test_realized_vol_matches_pandas_rolling(eth, streamed, window):
    want = ref_log_returns(eth).rolling(window).std(ddof=1).to_numpy()
    got = column(streamed, f"rv_{window}")
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(column(streamed, f"rv_{window}_ann"), want * math.sqrt(525_600), **TOL)
    assert np.isnan(got[:window]).all() and not np.isnan(got[window:]).any()
    np.testing.assert_array_equal(flagged(streamed, f"rv_{window}", DQ.WARMING_UP), np.isnan(want))


def test_rho_matches_pandas_rolling_corr(eth, btc, streamed):
    assert (eth["t"].to_numpy() == btc["t"].to_numpy()).all()
    re, rb = ref_log_returns(eth), ref_log_returns(btc)
    want = re.rolling(60).corr(rb).to_numpy()
    got = column(streamed, "rho")
    np.testing.assert_allclose(got, want, **TOL)
    assert np.nanmin(got) > 0 and np.nanmax(got) <= 1  # ETH and BTC move together
    assert all(set(s.flags.get("rho", ())) <= {DQ.OUTLIER} for s in streamed[60:])
    assert all(DQ.WARMING_UP in s.flags["rho"] for s in streamed[:60])


def test_rho_reference_arriving_after_the_bar(eth, btc):
    engine = FeatureEngine.new("ETHUSDT")
    ours = bars(eth.iloc[:200])
    for b, (t, c) in zip(ours, zip(btc["t"][:200], btc["close"][:200], strict=True), strict=True):
        snap = engine.on_bar(b)
        if b.open_time > ours[0].open_time:
            assert DQ.STALE_INPUT in snap.flags["rho"]  # BTC's bar for this minute not in yet
        engine.on_reference_bar(int(t), c)
    late = engine.snapshot(ours[-1].open_time + MIN)
    want = ref_log_returns(eth.iloc[:200]).rolling(60).corr(ref_log_returns(btc.iloc[:200])).iloc[-1]
    assert late.features["rho"] == pytest.approx(want, rel=1e-9) and "rho" not in late.flags


def test_outlier_flag_on_real_data_matches_reference(eth, streamed):
    r = ref_log_returns(eth)
    is_out = (r.abs() > 8.0 * r.rolling(60).std(ddof=1).shift(1)).astype(float)
    assert is_out.sum() >= 1  # the sample has a few real 8-sigma minutes
    for w in (15, 240):
        want = is_out.rolling(w, min_periods=1).max().to_numpy() > 0
        np.testing.assert_array_equal(flagged(streamed, f"rv_{w}", DQ.OUTLIER), want)


def test_outlier_flag_on_a_constructed_spike(eth):
    r = ref_log_returns(eth)
    z = r.abs() / r.rolling(60).std(ddof=1).shift(1)
    i = next(i for i in range(400, N) if not (z.iloc[i - 300:i + 20] > 8).any())
    df = eth.copy()
    df.loc[i, "close"] *= 1.03
    df.loc[i, "high"] = max(df.loc[i, "high"], df.loc[i, "close"])
    _, snaps = run(df)
    out = flagged(snaps, "rv_15", DQ.OUTLIER)
    assert not out[i - 100:i].any()
    assert out[i:i + 15].all() and not out[i + 15:i + 20].any()
    assert flagged(snaps, "rv_240", DQ.OUTLIER)[i:i + 240].all()
    assert flagged(snaps, "atr", DQ.OUTLIER)[i:i + 14].all()
    # the move stays in the statistics: real markets do jump
    want = np.log(df["close"]).diff().rolling(15).std(ddof=1).to_numpy()
    np.testing.assert_allclose(column(snaps, "rv_15"), want, **TOL)


def test_gap_flag_and_values_across_a_hole(eth):
    i, missing = 500, 3
    df = eth.drop(index=range(i, i + missing)).reset_index(drop=True)
    engine, snaps = run(df)
    gap = flagged(snaps, "rv_15", DQ.GAP)
    # flagged while the first bar after the hole is inside the 15-bar window
    assert not gap[:i].any() and gap[i:i + 15].all() and not gap[i + 15:].any()
    assert flagged(snaps, "rv_240", DQ.GAP)[i:i + 240].all()
    assert flagged(snaps, "atr", DQ.GAP)[i:i + 14].all()
    # the return spanning the hole is left out; windows roll over 1-bar returns only
    r = np.log(df["close"]).diff()
    r[i] = np.nan
    valid = r.dropna()
    want = valid.rolling(60).std(ddof=1).reindex(df.index)
    got = column(snaps, "rv_60")
    sel = ~np.isnan(want.to_numpy())
    np.testing.assert_allclose(got[sel], want.to_numpy()[sel], **TOL)
    assert got[i] == pytest.approx(want.iloc[i - 1], rel=1e-12)  # the hole adds no return
    # true range across the hole still spans from the last close before it
    np.testing.assert_allclose(column(snaps, "atr"), ref_atr_ewm(df, 14).to_numpy(), **TOL)


def test_serialization_round_trip_mid_stream_continues_identically(eth, btc, streamed):
    k = 1234
    engine, _ = run(eth.iloc[:k], btc.iloc[:k])
    blob = engine.to_bytes()
    resumed = FeatureEngine.from_bytes(blob, FeatureConfig())
    assert resumed.to_bytes() == blob
    _, tail = run(eth.iloc[k:], btc.iloc[k:], engine=resumed)
    assert tail == streamed[k:]
    _, tail2 = run(eth.iloc[k:], btc.iloc[k:], engine=engine)
    assert resumed.to_bytes() == engine.to_bytes() and tail2 == tail
    assert len(blob) < 32_000  # small enough for one Redis value per symbol


def test_state_rejects_other_config_and_version(eth):
    engine, _ = run(eth.iloc[:50])
    with pytest.raises(ValueError, match="another config"):
        FeatureEngine.from_bytes(engine.to_bytes(), FeatureConfig(atr_period=20))
    with pytest.raises(ValueError, match="version"):
        state_from_bytes(engine.to_bytes().replace(b'"v":1', b'"v":99'))


def test_replayed_and_out_of_order_bars_are_ignored(eth):
    engine, _ = run(eth.iloc[:100])
    blob = engine.to_bytes()
    for b in bars(eth.iloc[95:100]):
        assert engine.on_bar(b) is None
    assert engine.on_reference_bar(int(eth["t"].iloc[0]), 1.0) is True
    assert engine.on_reference_bar(int(eth["t"].iloc[0]), 1.0) is False
    assert engine.state.own_ret == state_from_bytes(blob).own_ret
    with pytest.raises(ValueError, match="finite and positive"):
        engine.on_bar(Bar(int(eth["t"].iloc[99]) + MIN, 1.0, 1.0, 1.0, float("nan")))


def test_bar_features_go_stale_when_bars_stop(eth):
    engine, snaps = run(eth.iloc[:300])
    assert "rv_60" not in snaps[-1].flags
    last_close_time = int(eth["t"].iloc[299]) + MIN
    assert "rv_60" not in engine.snapshot(last_close_time + 120_000).flags
    late = engine.snapshot(last_close_time + 120_001)
    for name in ("atr", "atr_pct", "rv_15", "rv_240_ann", "rho"):
        assert DQ.STALE_INPUT in late.flags[name], name


def test_spread_and_depth():
    spread, mid = spread_mid("100", "101")
    assert mid == 100.5 and spread == pytest.approx(1 / 100.5 * 1e4)
    bids = [("99", "2"), ("100", "1"), ("98", "5")]
    asks = [("102", "3"), ("101", "1")]
    bid_n, ask_n, imb = depth_notional(bids, asks, levels=2)
    assert (bid_n, ask_n) == (298.0, 407.0)
    assert imb == pytest.approx((298 - 407) / (298 + 407))
    assert depth_notional([], [], 5) == (0.0, 0.0, None)

    engine = FeatureEngine.new("ETHUSDT", FeatureConfig(depth_levels=2))
    engine.on_book(1_000, bids, asks)
    engine.on_book(500, [("1", "1")], [("2", "1")])  # older update: ignored
    snap = engine.snapshot(1_000 + 10_000)
    f = snap.features
    assert (f["mid"], f["depth_bid"], f["depth_ask"]) == (100.5, 298.0, 407.0)
    assert f["spread_bp"] == pytest.approx(99.50248756, rel=1e-9)
    assert not any(n in snap.flags for n in ("mid", "spread_bp", "depth_imbalance"))
    stale = engine.snapshot(1_000 + 10_001)
    assert all(stale.flags[n] == [DQ.STALE_INPUT] for n in ("mid", "spread_bp", "depth_bid"))
    empty = FeatureEngine.new("X").snapshot(0)
    assert empty.features["spread_bp"] is None and empty.flags["spread_bp"] == [DQ.WARMING_UP]
    assert empty.flags["atr"] == empty.flags["rho"] == [DQ.WARMING_UP]


def test_funding_rate_predicted_and_minutes_to_funding():
    path = DATA / "ETH_USDT_USDT-8h-funding_rate.feather"
    if not path.exists():
        pytest.skip("funding data not found")
    fr = pd.read_feather(path)
    engine = FeatureEngine.new("ETHUSDT")
    for row in fr.itertuples():
        engine.on_funding(int(row.date.value // 1_000_000), rate=row.open)
    last_ts = int(fr["date"].iloc[-1].value // 1_000_000)
    engine.on_funding(last_ts - 1, rate=123.0)  # out of order: ignored
    engine.on_funding(last_ts + 5_000, predicted=0.0001, next_funding_time=last_ts + 8 * 3_600_000)
    snap = engine.snapshot(last_ts + 60_000)
    assert snap.features["funding_rate"] == fr["open"].iloc[-1]
    assert snap.features["funding_predicted"] == 0.0001
    assert snap.features["minutes_to_funding"] == pytest.approx(8 * 60 - 1)
    assert "funding_rate" not in snap.flags and "funding_predicted" not in snap.flags
    later = engine.snapshot(last_ts + 5_000 + 60_001)
    assert later.flags["funding_predicted"] == [DQ.STALE_INPUT]
    assert "funding_rate" not in later.flags
    assert DQ.STALE_INPUT in engine.snapshot(last_ts + 8 * 3_600_000 + 15 * 60_000 + 1).flags["funding_rate"]
