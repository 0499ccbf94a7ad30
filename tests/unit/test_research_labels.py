"""S7's label arithmetic on hand-made documents, against numbers worked out by hand: funding while held,
a quantity still held at the horizon, an add, the stop-first reading of a bar touching both levels."""

from __future__ import annotations

from decimal import Decimal as D

from chimera.handlers.autopsy.stagnation import stagnated
from chimera.handlers.labels.compute import classify, counterfactual, traded
from chimera.schemas.messages import Kline

H = 3_600_000


def fill(tid, side, qty, price, fee, ts, pos="p1"):
    return {"trade_id": str(tid), "side": side, "qty": qty, "price": price, "fee": fee, "ts": ts, "pos_id": pos}


def test_traded_with_funding_an_add_and_a_partial_exit_held_at_the_horizon():
    pos = [{"_key": "p1", "pos_id": "p1", "symbol": "BTCUSDT", "side": "BUY", "account_id": "main"}]
    fills = [fill(1, "BUY", "1", "100", "0.05", 0), fill(2, "BUY", "1", "110", "0.055", 1 * H),
             fill(3, "SELL", "1", "120", "0.06", 2 * H), fill(4, "SELL", "1", "90", "0.045", 20 * H)]  # after 12h
    funding = [{"symbol": "BTCUSDT", "account": "main", "funding_time": 8 * H, "amount_usdt": "-0.3"},
               {"symbol": "BTCUSDT", "account": "main", "funding_time": 16 * H, "amount_usdt": "-0.7"},  # after 12h
               {"symbol": "BTCUSDT", "account": "sub1", "funding_time": 8 * H, "amount_usdt": "-9"},
               {"symbol": "ETHUSDT", "account": "main", "funding_time": 8 * H, "amount_usdt": "-9"}]
    o = traded(pos, fills, funding, 12 * H, {"BTCUSDT": D("112")})
    # avg entry 105; realized (120-105)*1 = 15; held 1 valued at 112: +7; fees .05+.055+.06; funding -0.3
    assert o.realized == D(15) and o.unrealized == D(7) and o.fees == D("0.165") and o.funding == D("-0.3")
    assert o.net_pnl == D("21.535") and o.notional == D(210) and o.roi_net == D("21.535") / D(210)
    assert o.exit_reason == "HORIZON" and o.pos_ids == ["p1"]
    assert traded(pos, fills, funding, 12 * H, {}) is None  # held and no bar to value it: not yet
    assert traded(pos, [], funding, 12 * H, {}) is None  # never filled: counterfactual instead


def bar(t, o, h, lo, c):
    return Kline(market="perp", symbol="X", interval="1m", open_time=t, close_time=t + 59_999, open=D(o), high=D(h),
                 low=D(lo), close=D(c), volume=D(1))


def test_counterfactual_stop_first_take_profit_and_horizon():
    fee = D("0.0005")
    both = [bar(0, 100, 104, 98, 101)]  # touches TP 103 and stop 98.5 in one bar: the stop
    o = counterfactual("BUY", D(100), D(1), D("1.5"), D(3), both, fee)
    assert o.exit_reason == "STOP" and o.exit_price == D("98.5")
    assert o.roi_net == (D("-1.5") - fee * D("198.5")) / 100
    o = counterfactual("SELL", D(100), D(1), D("1.5"), D(3), [bar(0, 100, 101, 99, 99), bar(60_000, 99, 99, 96, 97)], fee)
    assert o.exit_reason == "TAKE_PROFIT" and o.exit_price == D(97) and o.roi_net == (D(3) - fee * D(197)) / 100
    o = counterfactual("BUY", D(100), D(1), D("1.5"), D(3), [bar(0, 100, 101, 99, "100.5")], fee)
    assert o.exit_reason == "HORIZON" and o.exit_price == D("100.5")
    assert classify(D("0.001"), D(0), D(0)) == (1, "POSITIVE") and classify(None, D(0), D(0)) == (0, "NONE")
    assert classify(D("0.0005"), D("0.001"), D("-0.001")) == (0, "NEUTRAL")


def test_stagnation_band_and_duration():
    flat = [(i * 60_000, 0.001 * (-1) ** i) for i in range(31)]
    assert stagnated(flat, band=0.002, min_ms=30 * 60_000)
    assert not stagnated(flat, band=0.002, min_ms=31 * 60_000)
    assert not stagnated([*flat[:-1], (flat[-1][0], 0.01)], band=0.002, min_ms=60_000)
