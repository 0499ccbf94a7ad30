"""Venue-side accounting (issue 12 item 5): every wallet movement is a trade or an income row.

Through the official SDK against the venue server: a taker entry, a maker partial exit, a funding
settlement, an ADL and a liquidation. Liquidation and ADL are in userTrades (realizedPnl, commission)
and forceOrders, and the wallet change equals Σ realizedPnl − Σ commission + Σ funding to the 1e-8.
Expected figures are worked out by hand below.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from chimera.venues.binance.adapter import FuturesTrading, VenueRejected
from tests.integration.venue.conftest import book, futures, inject, mark, trade

T0 = 4_000_000_000_000
SYM = "BTCUSDT"


def _at(t, *events):
    return [{**e, "time": t} for e in events]


def _wallet(api) -> D:
    return next(D(b["balance"]) for b in (x.to_dict() for x in api.futures_account_balance_v3().data())
                if b["asset"] == "USDT")


def test_liquidation_and_adl_are_trades_and_the_wallet_identity_holds(bare_venue):
    v = bare_venue
    key, secret = v.keys["main"]
    fut = FuturesTrading(v.base_url, key, secret)
    api = futures(v)
    inject(v, *_at(T0, trade(SYM, "30000"), book(SYM, "29999.9", "30000.1"), mark(SYM, "30000")))
    start = _wallet(api)

    fut.new_order(symbol=SYM, side="BUY", type="MARKET", qty=D("0.010"), client_id="entry")       # @ 30000.1
    fut.new_order(symbol=SYM, side="SELL", type="LIMIT", qty=D("0.005"), price=D("30010.0"), tif="GTX",
                  client_id="tp")
    inject(v, *_at(T0 + 1000, trade(SYM, "30020")))                                                 # through 30010
    inject(v, *_at(T0 + 2000, {"market": "futures", "symbol": SYM, "kind": "funding", "rate": "0.0001"}))
    adl = v.control("/chimera/v1/adl", {"account": "main", "symbol": SYM, "qty": "0.002"})         # @ mark 30000
    assert adl["clientOrderId"] == "adl_autoclose" and D(adl["price"]) == D("30000")
    inject(v, *_at(T0 + 3000, mark(SYM, "28000")))                                                  # liquidation

    trades = [t.to_dict() for t in api.account_trade_list(symbol=SYM).data()]
    income = [i.to_dict() for i in api.get_income_history(symbol=SYM, limit=1000).data()]
    end = _wallet(api)
    funding = sum((D(i["income"]) for i in income if i["incomeType"] == "FUNDING_FEE"), D(0))
    realized = sum((D(t["realizedPnl"]) for t in trades), D(0))
    commission = sum((D(t["commission"]) for t in trades), D(0))

    # By hand: entry fee 30000.1*0.01*0.0005 = 0.1500005; maker exit realized (30010-30000.1)*0.005
    # = 0.0495, fee 30010*0.005*0.0002 = 0.03001; funding -0.005*30000*0.0001 = -0.015;
    # ADL realized (30000-30000.1)*0.002 = -0.0002, no fee.
    assert [(D(t["realizedPnl"]), D(t["commission"])) for t in trades[:3]] == [
        (D(0), D("0.15000050")), (D("0.04950000"), D("0.03001000")), (D("-0.00020000"), D(0))]
    assert funding == D("-0.01500000")
    # Liquidation of the last 0.003: isolated margin 0.003*30000.1/20 = 4.500015 is lost at the
    # bankruptcy price 30000.1 - 4.500015/0.003 = 28500.095, with no commission.
    liq = trades[3]
    assert (D(liq["price"]), D(liq["qty"]), D(liq["realizedPnl"]), D(liq["commission"])) == (
        D("28500.095"), D("0.003"), D("-4.50001500"), D(0))
    assert len(trades) == 4
    assert end - start == realized - commission + funding  # exact, 8 dp
    # -0.1500005 + 0.0495 - 0.03001 - 0.015 - 0.0002 - 4.500015
    assert end - start == D("-4.64572550")

    forced = fut.force_orders(SYM)
    assert [(o["clientOrderId"].split("-")[0], D(o["executedQty"])) for o in forced] == [
        ("adl_autoclose", D("0.002")), ("autoclose", D("0.003"))]
    assert [o.to_dict()["clientOrderId"] for o in api.users_force_orders(symbol=SYM, auto_close_type="ADL").data()] \
        == ["adl_autoclose"]

    ledger = v.control("/chimera/v1/ledger?account=main")["wallet"]
    assert (D(ledger["balance_start"]), D(ledger["balance_end"])) == (start, end)
    assert (D(ledger["realized_pnl"]), D(ledger["commission"]), D(ledger["funding"])) == (
        realized, commission, funding)
    assert [x["kind"] for x in v.control("/chimera/v1/ledger?account=main")["liquidations"]] == ["ADL", "LIQUIDATION"]


def test_leverage_and_margin_type_answer_like_binance(bare_venue):
    v = bare_venue
    key, secret = v.keys["main"]
    fut = FuturesTrading(v.base_url, key, secret)
    inject(v, *_at(T0, trade(SYM, "30000"), book(SYM, "29999.9", "30000.1"), mark(SYM, "30000")))
    assert fut.set_margin_type(SYM, "ISOLATED") is False  # -4046 "No need to change margin type." = success
    assert fut.set_leverage(SYM, 10)["leverage"] == 10
    fut.new_order(symbol=SYM, side="BUY", type="MARKET", qty=D("0.010"), client_id="e")
    pos = fut.position_risk(SYM)[0]
    assert (pos["leverage"], D(pos["isolatedWallet"])) == ("10", D("30.00010000"))  # 300.001 / 10
    with pytest.raises(VenueRejected) as exc:
        fut.set_margin_type(SYM, "CROSSED")
    assert exc.value.code == -4048
    with pytest.raises(VenueRejected) as exc:
        fut.set_leverage(SYM, 5)
    assert exc.value.code == -4161
    assert fut.set_leverage(SYM, 20)["leverage"] == 20
