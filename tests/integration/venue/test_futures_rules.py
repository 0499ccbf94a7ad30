"""Futures fill rules, post-only, reduce-only, stops by working type, duplicate ids, liquidation.

Market moves are injected through the venue's event path; expected numbers are recomputed here.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from binance_common.errors import BadRequestError

from .conftest import D, book, futures, inject, mark, trade

Q8 = Decimal("0.00000001")


def q8(x: Decimal) -> Decimal:
    return x.quantize(Q8, rounding=ROUND_HALF_UP)


@pytest.fixture
def fut(bare_venue):
    inject(bare_venue, book("BTCUSDT", "30000.0", "30000.1"), trade("BTCUSDT", "30000.0"), mark("BTCUSDT", "30000.0"))
    return futures(bare_venue)


def order(client, **kw):
    return client.query_order(symbol="BTCUSDT", **kw).data()


def test_limit_fills_only_when_traded_through_at_limit_price_as_maker(bare_venue, fut):
    placed = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                           price=29990, new_client_order_id="lim1").data()
    assert placed.status == "NEW"
    inject(bare_venue, trade("BTCUSDT", "29990.0"))
    assert order(fut, order_id=placed.order_id).status == "NEW"  # touch is not enough in "through" mode
    inject(bare_venue, trade("BTCUSDT", "29989.9"))
    filled = order(fut, orig_client_order_id="lim1")
    assert filled.status == "FILLED" and D(filled.avg_price) == D("29990")
    fills = fut.account_trade_list(symbol="BTCUSDT", order_id=placed.order_id).data()
    assert len(fills) == 1 and fills[0].maker is True
    assert D(fills[0].commission) == q8(D("29990") * D("0.01") * D("0.0002"))


def test_market_fills_at_the_book_as_taker_and_moves_the_position(bare_venue, fut):
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.5, new_client_order_id="m1")
    got = order(fut, orig_client_order_id="m1")
    assert got.status == "FILLED" and D(got.avg_price) == D("30000.1")
    pos = fut.position_information_v3(symbol="BTCUSDT").data()[0]
    assert D(pos.position_amt) == D("0.5") and D(pos.entry_price) == D("30000.1")
    fills = fut.account_trade_list(symbol="BTCUSDT").data()
    assert fills[0].maker is False
    assert D(fills[0].commission) == q8(D("30000.1") * D("0.5") * D("0.0005"))


def test_ioc_and_fok_expire_instead_of_resting(bare_venue, fut):
    ioc = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="IOC", quantity=0.01,
                        price=29000, new_order_resp_type="RESULT").data()
    assert ioc.status == "EXPIRED"
    # 6 BTC at the ask limit: the recorded top level holds 5, so FOK cannot fill in full.
    fok = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="FOK", quantity=6,
                        price=30000.1, new_order_resp_type="RESULT").data()
    assert fok.status == "EXPIRED" and D(fok.executed_qty) == 0
    assert fut.current_all_open_orders(symbol="BTCUSDT").data() == []


def test_gtx_that_would_take_is_rejected_with_5022_and_not_recorded(bare_venue, fut):
    with pytest.raises(BadRequestError) as err:
        fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTX", quantity=0.01,
                      price=30000.1, new_client_order_id="gtx1")
    assert err.value.status_code == -5022
    with pytest.raises(BadRequestError) as err:
        order(fut, orig_client_order_id="gtx1")
    assert err.value.status_code == -2013
    ok = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTX", quantity=0.01,
                       price=30000.0).data()
    assert ok.status == "NEW"


def test_reduce_only_rejected_when_it_would_increase_the_position(bare_venue, fut):
    with pytest.raises(BadRequestError) as err:
        fut.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.01, reduce_only="true")
    assert (err.value.status_code, err.value.error_message) == (-2022, "ReduceOnly Order is rejected.")
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01)
    with pytest.raises(BadRequestError) as err:
        fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01, reduce_only="true")
    assert err.value.status_code == -2022
    fut.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.01, reduce_only="true")
    assert D(fut.position_information_v2(symbol="BTCUSDT").data()[0].position_amt) == 0


def test_mark_price_stop_ignores_last_price_and_fires_on_mark(bare_venue, fut):
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.1)
    stop = fut.new_algo_order(algo_type="CONDITIONAL", symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                              trigger_price=29500, close_position="true", working_type="MARK_PRICE",
                              client_algo_id="sl-mark").data()
    assert stop.algo_status == "NEW"
    inject(bare_venue, book("BTCUSDT", "29399.9", "29400.0"), trade("BTCUSDT", "29400.0"))
    assert fut.query_algo_order(algo_id=stop.algo_id).data().algo_status == "NEW"  # last crossed, mark did not
    inject(bare_venue, mark("BTCUSDT", "29499.0"))
    assert fut.query_algo_order(client_algo_id="sl-mark").data().algo_status == "FINISHED"
    done = order(fut, order_id=stop.algo_id)
    assert done.status == "FILLED" and done.orig_type == "STOP_MARKET"
    assert D(done.avg_price) == D("29399.9")
    assert fut.position_information_v3(symbol="BTCUSDT").data() == []


def test_contract_price_stop_fires_on_last_price(bare_venue, fut):
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.1)
    stop = fut.new_algo_order(algo_type="CONDITIONAL", symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                              trigger_price=29500, quantity=0.1, reduce_only="true").data()
    inject(bare_venue, mark("BTCUSDT", "29400.0"))
    assert order(fut, order_id=stop.algo_id).status == "NEW"
    inject(bare_venue, book("BTCUSDT", "29499.9", "29500.0"), trade("BTCUSDT", "29500.0"))
    assert order(fut, order_id=stop.algo_id).status == "FILLED"


def test_algo_order_cancel_and_open_list(bare_venue, fut):
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.1)
    tp = fut.new_algo_order(algo_type="CONDITIONAL", symbol="BTCUSDT", side="SELL", type="TAKE_PROFIT_MARKET",
                            trigger_price=31000, close_position="true").data()
    assert [a.algo_id for a in fut.current_all_algo_open_orders(symbol="BTCUSDT").data()] == [tp.algo_id]
    fut.cancel_algo_order(algo_id=tp.algo_id)
    assert fut.query_algo_order(algo_id=tp.algo_id).data().algo_status == "CANCELED"
    assert fut.current_all_algo_open_orders(symbol="BTCUSDT").data() == []


def test_stop_that_would_trigger_immediately_is_rejected(bare_venue, fut):
    with pytest.raises(BadRequestError) as err:
        fut.new_algo_order(algo_type="CONDITIONAL", symbol="BTCUSDT", side="BUY", type="STOP_MARKET",
                           trigger_price=29000, quantity=0.01)
    assert err.value.status_code == -2021


def test_duplicate_client_order_id_among_open_orders(bare_venue, fut):
    first = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                          price=29000, new_client_order_id="dup-1").data()
    with pytest.raises(BadRequestError) as err:
        fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                      price=29001, new_client_order_id="dup-1")
    assert (err.value.status_code, err.value.error_message) == (-4116, "ClientOrderId is duplicated.")
    fut.cancel_order(symbol="BTCUSDT", order_id=first.order_id)
    again = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                          price=29001, new_client_order_id="dup-1").data()
    assert again.order_id != first.order_id


def test_batch_orders_and_cancel_all(bare_venue, fut):
    import json

    res = fut.place_multiple_orders(batch_orders=[
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "29000"},
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "29000.05"},
    ]).data()
    raw = [r if isinstance(r, dict) else json.loads(r.to_json()) for r in res]
    assert raw[0]["status"] == "NEW" and raw[1]["code"] == -4014
    assert len(fut.current_all_open_orders(symbol="BTCUSDT").data()) == 1
    fut.cancel_all_open_orders(symbol="BTCUSDT")
    assert fut.current_all_open_orders(symbol="BTCUSDT").data() == []


def test_isolated_liquidation_at_the_computed_price_loses_the_margin(bare_venue, fut):
    start = D(fut.futures_account_balance_v3().data()[0].balance)
    fut.change_initial_leverage(symbol="BTCUSDT", leverage=20)
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.1)
    entry, qty, mmr = D("30000.1"), D("0.1"), D("0.025")  # mmr from the snapshot's maintMarginPercent
    margin = entry * qty / 20
    liq = (qty * entry - margin) / (qty * (1 - mmr))
    pos = fut.position_information_v2(symbol="BTCUSDT").data()[0]
    assert D(pos.liquidation_price) == liq.quantize(D("0.01"))
    inject(bare_venue, mark("BTCUSDT", str((liq + 1).quantize(D("0.1")))))
    assert D(fut.position_information_v2(symbol="BTCUSDT").data()[0].position_amt) == qty
    inject(bare_venue, mark("BTCUSDT", str((liq - 1).quantize(D("0.1")))))
    assert D(fut.position_information_v2(symbol="BTCUSDT").data()[0].position_amt) == 0
    open_fee = q8(entry * qty * D("0.0005"))
    end = D(fut.futures_account_balance_v3().data()[0].balance)
    assert end == start - open_fee - margin
    incomes = fut.get_income_history(symbol="BTCUSDT").data()
    assert sum(D(i.income) for i in incomes) == end - start


def test_margin_insufficient(bare_venue, fut):
    with pytest.raises(BadRequestError) as err:
        fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=100)
    assert (err.value.status_code, err.value.error_message) == (-2019, "Margin is insufficient.")
