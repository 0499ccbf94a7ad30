"""SPOT positions through S4 + S6 + S1 (spot user data) on real Redis (standalone + cluster), the SQLite
store and the local venue driven through the official Binance spot SDK. Market data: the real
2024-08-08 BTCUSDT spot recording, paused; the market is moved with the venue's injection API.

Expected money is computed from the *venue's* trades (``GET /api/v3/myTrades``), never from Chimera's
records: PnL = quote received - quote fees on the sell - quote paid for the buy.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.venues.binance.adapter import client_order_id
from tests.integration.test_router_b1 import env  # noqa: F401 - fixture
from tests.integration.test_router_b2 import (  # noqa: F401 - venue is a fixture
    NO_CONDITIONAL,
    market_at,
    protected_entry,
    spot,
    spot_sdk,
    submit,
    venue,
)
from tests.support.polling import wait_until
from tests.support.positions import pos_events, position, user_data
from tests.support.workers import ThreadWorker


def spot_user_data(r, v, store_url: str, account: str = "main"):
    """S1's SPOT user-data connector (executionReport -> venue:{reports}) for the block's duration."""
    return user_data(r, v, store_url, market="SPOT", account=account)


def venue_trades(v, cid: str) -> list[dict]:
    """The venue's trades of one order, through the SDK (``myTrades`` by orderId)."""
    sdk = spot_sdk(v)
    oid = sdk.get_order(symbol="BTCUSDT", orig_client_order_id=cid).data().to_dict()["orderId"]
    return [t.to_dict() for t in sdk.my_trades(symbol="BTCUSDT", order_id=oid).data()]


def trade_math(buys: list[dict], sells: list[dict]) -> tuple[Decimal, Decimal, Decimal]:
    """(held after the buy's base fee, net PnL in USDT, fees in USDT) from venue trades."""
    D = Decimal
    bought = sum((D(t["qty"]) for t in buys), D(0))
    base_fee = sum((D(t["commission"]) for t in buys if t["commissionAsset"] == "BTC"), D(0))
    paid = sum((D(t["quoteQty"]) for t in buys), D(0))
    got = sum((D(t["quoteQty"]) - D(t["commission"]) for t in sells), D(0))
    fees = sum((D(t["commission"]) * D(t["price"]) for t in buys), D(0)) + \
        sum((D(t["commission"]) for t in sells), D(0))
    return bought - base_fee, got - paid, fees


def test_spot_oco_entry_is_a_position_closed_by_its_take_profit(r, env, venue):  # noqa: F811
    s, store = env
    intent, tp, sl = protected_entry(venue, "spos-1")
    with spot_user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), \
            ThreadWorker(S6, r, s, "s6-a", store):
        submit(r, intent)
        pos = wait_until(lambda: (p := position(store, "spos-1")) and p.protection == "OCO" and p, timeout=30,
                         message="spot position ACTIVE with its OCO")
        assert pos.state == "ACTIVE" and pos.market == "SPOT" and pos.side == "BUY"
        held, _, entry_fees = trade_math(venue_trades(venue, client_order_id("spos-1", "e")), [])
        assert pos.qty == held == Decimal("0.00999")  # 0.01 bought, 0.1% taker fee paid in BTC
        assert pos.fees == entry_fees and pos.quote_asset == "USDT" and pos.sl_price == sl and pos.tp_price == tp
        otp, osl = client_order_id("spos-1", "otp"), client_order_id("spos-1", "osl")
        assert set(pos.protection_orders) == {otp, osl}
        # The venue holds the OCO: both legs open, one list, for the held quantity.
        open_ = {o.client_order_id: o for o in spot(venue).open_orders("BTCUSDT")}
        assert set(open_) == {otp, osl} and open_[otp].list_id == open_[osl].list_id != ""
        assert {o.qty for o in open_.values()} == {held}
        # A trade through the take-profit: the venue fills the LIMIT_MAKER and expires the stop leg.
        market_at(venue, "trade", tp + Decimal("1"))
        pos = wait_until(lambda: (p := position(store, "spos-1")) and p.state == "CLOSED" and p, timeout=30,
                         message="spot position CLOSED by the take-profit fill")
        [exit_ev] = wait_until(lambda: pos_events(r, "EXIT"), timeout=10, message="EXIT event")
    assert spot(venue).query("BTCUSDT", otp).status == "FILLED"
    assert spot(venue).query("BTCUSDT", osl).status == "EXPIRED"
    assert spot(venue).open_orders("BTCUSDT") == []
    sells = venue_trades(venue, otp)
    held, pnl, fees = trade_math(venue_trades(venue, client_order_id("spos-1", "e")), sells)
    assert pos.close_reason == "TAKE_PROFIT" and pos.exit_intent_id == "spos-1" and pos.qty == 0
    assert pos.realized_pnl == pnl and pos.fees == fees and pnl > 0
    assert pos.exit_price == sum((Decimal(t["quoteQty"]) for t in sells), Decimal(0)) / held
    assert pos.fills_out == {otp: held}
    assert exit_ev.realized_pnl == pnl and exit_ev.exit_price == pos.exit_price
    assert store.get("positions_snapshots", "spos-1:closed")["state"] == "CLOSED"
    # The venue's BTC balance is back where it was before the entry (the whole held quantity was sold).
    btc = next(b for b in spot_sdk(venue).get_account().data().to_dict()["balances"] if b["asset"] == "BTC")
    assert Decimal(btc["free"]) + Decimal(btc["locked"]) == Decimal("1")


@pytest.mark.parametrize("venue", [{"spot_oco_allowed": False}], indirect=True)
def test_stop_loss_limit_protection_fill_closes_the_position_at_a_loss(r, env, venue):  # noqa: F811
    s, store = env
    intent, tp, sl = protected_entry(venue, "spos-3")
    sl_id, tp_id = client_order_id("spos-3", "sl"), client_order_id("spos-3", "tp")
    with spot_user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), \
            ThreadWorker(S6, r, s, "s6-a", store):
        submit(r, intent)
        pos = wait_until(lambda: (p := position(store, "spos-3")) and p.protection and p, timeout=30,
                         message="spot position ACTIVE with its stop")
        assert pos.protection == "STOP" and set(pos.protection_orders) == {sl_id, tp_id}
        assert {o.type for o in spot(venue).open_orders("BTCUSDT")} == {"STOP_LOSS_LIMIT", "LIMIT_MAKER"}
        market_at(venue, "trade", sl - Decimal("1"))  # through the stop: it triggers and its limit sell fills
        pos = wait_until(lambda: (p := position(store, "spos-3")) and p.state == "CLOSED" and p, timeout=30,
                         message="position closed by the stop-loss-limit fill")
        wait_until(lambda: spot(venue).query("BTCUSDT", tp_id).status == "CANCELED", timeout=30,
                   message="take-profit cancelled once the stop filled")
    held, pnl, fees = trade_math(venue_trades(venue, client_order_id("spos-3", "e")), venue_trades(venue, sl_id))
    assert pos.close_reason == "STOP_LOSS" and pos.realized_pnl == pnl < 0 and pos.fees == fees
    assert pos.fills_out == {sl_id: held} and spot(venue).open_orders("BTCUSDT") == []


def test_unprotected_spot_entry_gets_its_oco_from_s6_and_the_stop_leg_closes_it(r, env, venue):  # noqa: F811
    s, store = env
    intent, tp, sl = protected_entry(venue, "spos-4", policy="MARKET")  # a plain MARKET buy with tp/sl
    otp, osl = client_order_id("spos-4:prot", "otp"), client_order_id("spos-4:prot", "osl")
    with spot_user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), \
            ThreadWorker(S6, r, s, "s6-a", store):
        submit(r, intent)
        pos = wait_until(lambda: (p := position(store, "spos-4")) and p.protection == "OCO" and p, timeout=30,
                         message="S6 protected the spot position with an OCO")
        held, _, _ = trade_math(venue_trades(venue, client_order_id("spos-4", "mkt")), [])
        assert pos.state == "ACTIVE" and pos.qty == held and set(pos.protection_orders) == {otp, osl}
        open_ = {o.client_order_id: o for o in spot(venue).open_orders("BTCUSDT")}
        assert set(open_) == {otp, osl} and open_[osl].stop_price == sl and open_[otp].price == tp
        assert {o.qty for o in open_.values()} == {held} and open_[otp].list_id == open_[osl].list_id != ""
        market_at(venue, "trade", sl - Decimal("1"))  # through the stop: it triggers, the list's TP expires
        pos = wait_until(lambda: (p := position(store, "spos-4")) and p.state == "CLOSED" and p, timeout=30,
                         message="position closed by the OCO's stop leg")
    held, pnl, fees = trade_math(venue_trades(venue, client_order_id("spos-4", "mkt")), venue_trades(venue, osl))
    assert pos.close_reason == "STOP_LOSS" and pos.exit_intent_id == "spos-4:prot"
    assert pos.realized_pnl == pnl < 0 and pos.fees == fees and pos.fills_out == {osl: held}
    assert spot(venue).query("BTCUSDT", otp).status == "EXPIRED" and spot(venue).open_orders("BTCUSDT") == []


@pytest.mark.parametrize("venue", [{"spot_disabled_order_types": NO_CONDITIONAL}], indirect=True)
def test_guard_stop_exit_closes_the_spot_position(r, env, venue):  # noqa: F811
    s, store = env
    intent, tp, sl = protected_entry(venue, "spos-5")
    exit_cid = client_order_id("spos-5:guard", "mkt")
    with spot_user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), \
            ThreadWorker(S6, r, s, "s6-a", store):
        submit(r, intent)
        pos = wait_until(lambda: (p := position(store, "spos-5")) and p.protection and p, timeout=30,
                         message="spot position ACTIVE with its guard stop")
        assert pos.protection == "GUARD" and pos.protection_orders == (client_order_id("spos-5", "tp"),)
        market_at(venue, "book", sl - Decimal("5"))  # mid below the stop: S4's guard sells at market
        pos = wait_until(lambda: (p := position(store, "spos-5")) and p.state == "CLOSED" and p, timeout=30,
                         message="position closed by the guard's exit")
    held, pnl, fees = trade_math(venue_trades(venue, client_order_id("spos-5", "e")), venue_trades(venue, exit_cid))
    assert pos.close_reason == "STOP_LOSS" and pos.exit_intent_id == "spos-5:guard"
    assert pos.realized_pnl == pnl and pos.fees == fees and pos.fills_out == {exit_cid: held}
    assert spot(venue).query("BTCUSDT", client_order_id("spos-5", "tp")).status == "CANCELED"
    assert spot(venue).open_orders("BTCUSDT") == []
