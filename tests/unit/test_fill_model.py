"""The fill model (docs/fill_model.md), with every expected figure worked out by hand here.

One real-sized BTCUSDT 1m bar drives the venue engine in-process (tick 0.10, step 0.001, maker
0.02 %, taker 0.05 %, half spread 1 bp, depth share 10 % of a path point's quantity).
"""

from __future__ import annotations

from decimal import Decimal as D

from chimera.venues.local.engine.market import MarketEvent
from chimera.venues.local.inprocess import InProcessExchange
from chimera.venues.local.loaders import kline_events, kline_path
from chimera.venues.local.replay.feed import Feed
from chimera.workers.clock import ManualClock

T = 1_751_328_000_000  # 2025-07-01 00:00 UTC
SYM = "BTCUSDT"
UP = (T, D("30000"), D("30060"), D("29950"), D("30030"), D("40"))     # close >= open
DOWN = (T, D("30000"), D("30060"), D("29950"), D("29980"), D("40"))   # close < open


def test_intrabar_path_up_bar_goes_open_high_low_close():
    assert kline_path(UP, 60_000) == [(T, D("30000")), (T + 20_000, D("30060")), (T + 40_000, D("29950")),
                                      (T + 59_999, D("30030"))]


def test_intrabar_path_down_bar_goes_open_low_high_close():
    assert kline_path(DOWN, 60_000) == [(T, D("30000")), (T + 20_000, D("29950")), (T + 40_000, D("30060")),
                                        (T + 59_999, D("29980"))]


def test_intrabar_path_scales_to_the_interval():
    # 5m bar: offsets 0, 100 s, 200 s and the bar's last millisecond.
    assert [t - T for t, _ in kline_path(UP, 300_000)] == [0, 100_000, 200_000, 299_999]


def _exchange(*extra: MarketEvent) -> InProcessExchange:
    events = sorted([*kline_events([UP], "futures", SYM), *extra], key=lambda e: e.time)
    return InProcessExchange(ManualClock(T - 1), feed=Feed(events=events))


def test_kline_data_quotes_a_spread_with_depth():
    ex = _exchange()
    ex.advance_to(T)  # the open: a trade of 40 / 4 = 10 BTC at 30000
    book = ex.venue().fut.book(SYM, 5)
    # half spread = 30000 * 0.0001 = 3.0 → bid 29997.0, ask 30003.0; depth 10 * 0.1 = 1.0 BTC each side
    assert book.bids == [(D("29997.0"), D("1.0"))] and book.asks == [(D("30003.0"), D("1.0"))]


def test_post_only_at_the_bid_rests_then_fills_as_maker_when_the_path_trades_through():
    ex = _exchange()
    ex.advance_to(T)
    fut = ex.venue().fut
    o = fut.new_order(symbol=SYM, side="BUY", type="LIMIT", qty=D("0.500"), price=D("29997.0"), tif="GTX",
                      client_id="maker-1")
    assert o.status == "NEW"  # rests: 29997.0 < ask 30003.0 (no -5022)
    ex.advance_to(T + 20_000)  # high 30060: not through a buy at 29997.0
    assert fut.query(SYM, "maker-1").status == "NEW"
    ex.advance_to(T + 40_000)  # low 29950 < 29997.0: filled at its own price, as maker
    o = fut.query(SYM, "maker-1")
    assert (o.status, o.avg_price, o.update_time) == ("FILLED", D("29997.0"), T + 40_000)
    (tr,) = fut.trades(SYM, o.venue_order_id)
    assert tr["maker"] is True
    assert D(tr["commission"]) == D("2.99970000")  # 29997.0 * 0.5 * 0.0002


def test_market_order_takes_the_synthetic_touch_then_pays_impact():
    ex = _exchange()
    ex.advance_to(T)
    fut = ex.venue().fut
    small = fut.new_order(symbol=SYM, side="BUY", type="MARKET", qty=D("0.300"), client_id="mkt-small")
    assert small.avg_price == D("30003.0")
    assert D(fut.trades(SYM, small.venue_order_id)[0]["commission"]) == D("4.50045000")  # 30003*0.3*0.0005
    big = fut.new_order(symbol=SYM, side="SELL", type="MARKET", qty=D("1.500"), client_id="mkt-big")
    legs = [(D(t["price"]), D(t["qty"])) for t in fut.trades(SYM, big.venue_order_id)]
    # 1.0 at the bid 29997.0; the other 0.5: notional 0.5*29997.0 = 14998.5, impact
    # 5 bp * 14998.5/1e6 = 7.49925e-6, 29997.0 * (1 - 7.49925e-6) = 29996.775..., rounded down to 29996.7
    assert legs == [(D("29997.0"), D("1.000")), (D("29996.7"), D("0.500"))]


def test_funding_settles_from_the_funding_data_at_the_last_price():
    funding = MarketEvent(time=T + 59_999, market="futures", symbol=SYM, kind="funding", rate=D("0.0001"))
    ex = _exchange(funding)
    ex.advance_to(T)
    fut = ex.venue().fut
    fut.new_order(symbol=SYM, side="BUY", type="MARKET", qty=D("0.300"), client_id="long")
    ex.advance_to(T + 59_999)  # close 30030, then the settlement: fee = -0.3 * 30030 * 0.0001
    rows = [i for i in ex.engine.income if i.income_type == "FUNDING_FEE"]
    assert [(r.income, r.time) for r in rows] == [(D("-0.90090000"), T + 59_999)]


def test_fee_rates_are_the_documented_defaults():
    ex = _exchange()
    f = ex.engine.fees
    assert (f.futures_maker, f.futures_taker, f.spot_maker, f.spot_taker) == (
        D("0.0002"), D("0.0005"), D("0.001"), D("0.001"))
