"""Spot order types, OCO one-cancels-other, duplicate ids, and MAIN<->UMFUTURE transfers."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from binance_common.errors import BadRequestError

from .conftest import D, book, futures, inject, spot, trade, wallet


def q8(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)


@pytest.fixture
def sp(bare_venue):
    inject(bare_venue, book("BTCUSDT", "30000.00", "30000.01", "spot"), trade("BTCUSDT", "30000.00", "spot"))
    return spot(bare_venue)


def balances(client) -> dict[str, tuple[Decimal, Decimal]]:
    return {b.asset: (D(b.free), D(b.locked)) for b in client.get_account().data().balances}


def test_market_buy_pays_taker_fee_in_base_asset(bare_venue, sp):
    before = balances(sp)
    res = sp.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.1).data()
    assert res.status == "FILLED" and D(res.fills[0].price) == D("30000.01")
    after = balances(sp)
    assert after["BTC"][0] == before["BTC"][0] + D("0.1") - q8(D("0.1") * D("0.001"))
    assert after["USDT"][0] == before["USDT"][0] - D("30000.01") * D("0.1")


def test_limit_locks_funds_and_fills_as_maker_when_traded_through(bare_venue, sp):
    before = balances(sp)
    o = sp.new_order(symbol="BTCUSDT", side="SELL", type="LIMIT", time_in_force="GTC", quantity=0.5,
                     price=30100).data()
    assert balances(sp)["BTC"] == (before["BTC"][0] - D("0.5"), D("0.5"))
    inject(bare_venue, trade("BTCUSDT", "30100.00", "spot"))
    assert sp.get_order(symbol="BTCUSDT", order_id=o.order_id).data().status == "NEW"
    inject(bare_venue, trade("BTCUSDT", "30100.01", "spot"))
    assert sp.get_order(symbol="BTCUSDT", order_id=o.order_id).data().status == "FILLED"
    after = balances(sp)
    assert after["BTC"] == (before["BTC"][0] - D("0.5"), 0)
    assert after["USDT"][0] == before["USDT"][0] + D("15050") - q8(D("15050") * D("0.001"))
    trades = sp.my_trades(symbol="BTCUSDT").data()
    assert trades[-1].is_maker is True


def test_limit_maker_that_would_take_is_rejected(bare_venue, sp):
    with pytest.raises(BadRequestError) as err:
        sp.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT_MAKER", quantity=0.1, price=30000.01)
    assert (err.value.status_code, err.value.error_message) == (-2010, "Order would immediately match and take.")


def test_stop_loss_limit_triggers_on_last_trade(bare_venue, sp):
    o = sp.new_order(symbol="BTCUSDT", side="SELL", type="STOP_LOSS_LIMIT", time_in_force="GTC", quantity=0.1,
                     price=29880, stop_price=29900).data()
    inject(bare_venue, book("BTCUSDT", "29889.00", "29889.01", "spot"), trade("BTCUSDT", "29899.00", "spot"))
    got = sp.get_order(symbol="BTCUSDT", order_id=o.order_id).data()
    assert got.status == "FILLED" and D(got.cummulative_quote_qty) == D("29889.00") * D("0.1")


def test_duplicate_client_order_id(bare_venue, sp):
    sp.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.1, price=29000,
                 new_client_order_id="same")
    with pytest.raises(BadRequestError) as err:
        sp.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.1, price=29001,
                     new_client_order_id="same")
    assert (err.value.status_code, err.value.error_message) == (-2010, "Duplicate order sent.")


def test_oco_one_fill_expires_the_other_leg(bare_venue, sp):
    before = balances(sp)
    lst = sp.order_list_oco(symbol="BTCUSDT", side="SELL", quantity=0.2, above_type="LIMIT_MAKER",
                            above_price=30500, below_type="STOP_LOSS_LIMIT", below_stop_price=29500,
                            below_price=29490, below_time_in_force="GTC", list_client_order_id="oco-1").data()
    assert lst.list_order_status == "EXECUTING"
    assert balances(sp)["BTC"] == (before["BTC"][0] - D("0.2"), D("0.2"))  # one lock for both legs
    ids = {o.client_order_id: o.order_id for o in lst.orders}
    inject(bare_venue, trade("BTCUSDT", "30500.01", "spot"))
    statuses = sorted(sp.get_order(symbol="BTCUSDT", order_id=i).data().status for i in ids.values())
    assert statuses == ["EXPIRED", "FILLED"]
    assert sp.get_order_list(order_list_id=lst.order_list_id).data().list_order_status == "ALL_DONE"
    after = balances(sp)
    assert after["BTC"] == (before["BTC"][0] - D("0.2"), 0)
    assert after["USDT"][0] == before["USDT"][0] + D("6100") - q8(D("6100") * D("0.001"))


def test_oco_cancel_cancels_both_legs(bare_venue, sp):
    lst = sp.order_list_oco(symbol="BTCUSDT", side="SELL", quantity=0.2, above_type="LIMIT_MAKER",
                            above_price=30500, below_type="STOP_LOSS_LIMIT", below_stop_price=29500,
                            below_price=29490, below_time_in_force="GTC").data()
    sp.delete_order_list(symbol="BTCUSDT", order_list_id=lst.order_list_id)
    assert sp.get_open_orders(symbol="BTCUSDT").data() == []
    assert balances(sp)["BTC"][1] == 0


def test_transfers_between_spot_and_usdm(bare_venue, sp):
    w = wallet(bare_venue)
    fut = futures(bare_venue)
    spot_before = balances(sp)["USDT"][0]
    fut_before = D(fut.futures_account_balance_v3().data()[0].balance)
    t1 = w.user_universal_transfer(type="MAIN_UMFUTURE", asset="USDT", amount=1234.5).data()
    assert balances(sp)["USDT"][0] == spot_before - D("1234.5")
    assert D(fut.futures_account_balance_v3().data()[0].balance) == fut_before + D("1234.5")
    w.user_universal_transfer(type="UMFUTURE_MAIN", asset="USDT", amount=234.5)
    assert balances(sp)["USDT"][0] == spot_before - D("1000")
    hist = w.query_user_universal_transfer_history(type="MAIN_UMFUTURE").data()
    assert hist.total == 1 and hist.rows[0].tran_id == t1.tran_id and D(hist.rows[0].amount) == D("1234.5")
    with pytest.raises(BadRequestError) as err:
        w.user_universal_transfer(type="UMFUTURE_MAIN", asset="USDT", amount=10**9)
    assert err.value.status_code == -5002
