"""B2 (SPOT entry with protection) through S4 on real Redis (standalone + cluster) and the local venue via the
official spot SDK. Market data: the real 2024-08-08 BTCUSDT spot recording (depth, bookTicker, trades), paused.

Three branches, chosen by what the venue's symbol supports (venue options, reflected in its exchangeInfo):
native OCO; OCO refused -> separate TP and SL orders linked by S4's watch; conditional orders refused ->
a local guard stop that fires one MARKET exit, also when its monitor is SIGKILLed. Assertions read the venue.
"""

from __future__ import annotations

import subprocess
from decimal import Decimal

import pytest
from binance_sdk_spot.spot import ConfigurationRestAPI, Spot

from chimera.handlers.router.role import SPEC as S4
from chimera.schemas.documents.orders import GuardStop, from_doc
from chimera.schemas.messages import OrderIntent
from chimera.streams import keys
from chimera.venues.binance.adapter import SpotTrading, client_order_id
from chimera.venues.local.replay import DataSpec
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from tests.integration.test_router_b1 import done, env, submit  # noqa: F401 - fixtures
from tests.support.market_data import market_data
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker, spawn

SPOT_2024 = "ws_streams_depth_trades_bookticker/spot/btcusdt_20240808.gz"  # under the shared market data
NO_CONDITIONAL = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
QTY = Decimal("0.01000")
HELD = Decimal("0.00999")  # the entry's 0.1% taker fee is paid in BTC


@pytest.fixture
def venue(request, tmp_path):
    """Spot venue; ``indirect`` params are VenueConfig overrides (symbol capabilities)."""
    v = start_venue(VenueConfig(data=[DataSpec("ws", str(market_data(SPOT_2024)), "spot", "BTCUSDT")],
                                state_file=str(tmp_path / "venue.json"), orders_per_10s=10_000,
                                orders_per_minute=100_000, **getattr(request, "param", {})))
    v.advance(events=3000)  # a real book and trades before the first order
    yield v
    v.stop()


def spot(venue) -> SpotTrading:
    key, secret = venue.keys["main"]
    return SpotTrading(venue.base_url, key, secret)


def spot_sdk(venue):
    key, secret = venue.keys["main"]
    return Spot(config_rest_api=ConfigurationRestAPI(api_key=key, api_secret=secret, base_path=venue.base_url)).rest_api


def symbol_info(venue) -> dict:
    return spot_sdk(venue).exchange_info(symbol="BTCUSDT").data().to_dict()["symbols"][0]


def engine_orders(venue, **match) -> list:
    orders = venue.call(lambda: list(venue.server.engine.orders.values()))
    return [o for o in orders if o.market == "spot" and all(getattr(o, k) == v for k, v in match.items())]


def protected_entry(venue, iid: str, policy: str = "OCO") -> tuple[OrderIntent, Decimal, Decimal]:
    mid = spot(venue).book("BTCUSDT").mid
    tp, sl = (mid * Decimal("1.01")).quantize(Decimal("0.01")), (mid * Decimal("0.99")).quantize(Decimal("0.01"))
    return OrderIntent(intent_id=iid, market="SPOT", symbol="BTCUSDT", side="BUY", qty=QTY, exec_policy=policy,
                       tp_price=tp, sl_price=sl), tp, sl


def placed(r, store, intent: OrderIntent) -> dict:
    """Submit the protected entry and wait for its final result (entry filled, protection in place)."""
    submit(r, intent)
    return wait_until(lambda: done(store, intent.intent_id), timeout=20, message="protection placed")["result"]


def market_at(venue, kind: str, price: Decimal) -> None:
    """Move the spot market through the venue's replay path (a trade, or a top of book around ``price``)."""
    ev = {"market": "spot", "symbol": "BTCUSDT", "kind": kind}
    if kind == "trade":
        ev.update(price=str(price), qty="0.05")
    else:
        ev.update(bid=str(price), bid_qty="3", ask=str(price + Decimal("0.01")), ask_qty="3")
    venue.control("/chimera/v1/market", {"events": [ev]})


def guard(store, iid: str) -> GuardStop | None:
    """The guard stop as S4 keeps it (``guard_stops/<intent_id>``)."""
    return from_doc(store.get("guard_stops", iid), GuardStop)


def test_native_oco_puts_tp_and_sl_on_the_venue(r, env, venue):  # noqa: F811
    s, store = env
    intent, tp, sl = protected_entry(venue, "oco-1")
    with ThreadWorker(S4, r, s, "s4-a", store):
        res = placed(r, store, intent)
    assert res["status"] == "ACCEPTED" and res["leg"] == "oco" and Decimal(res["filled_qty"]) == HELD
    open_ = {o.type: o for o in spot(venue).open_orders("BTCUSDT")}
    assert set(open_) == {"LIMIT_MAKER", "STOP_LOSS_LIMIT"}
    assert open_["LIMIT_MAKER"].price == tp and open_["STOP_LOSS_LIMIT"].stop_price == sl
    assert {o.qty for o in open_.values()} == {HELD} and {o.side for o in open_.values()} == {"SELL"}
    assert open_["LIMIT_MAKER"].list_id == open_["STOP_LOSS_LIMIT"].list_id != ""
    lst = spot_sdk(venue).get_order_list(orig_client_order_id=client_order_id("oco-1", "oco")).data().to_dict()
    assert lst["listStatusType"] == "EXEC_STARTED" and len(lst["orders"]) == 2
    assert {o["clientOrderId"] for o in lst["orders"]} == {client_order_id("oco-1", "otp"), client_order_id("oco-1", "osl")}
    assert store.get("orders", "oco-1:otp")["status"] == "ACCEPTED"
    assert store.get("orders", "oco-1:osl")["status"] == "ACCEPTED"
    assert store.get("orders", "oco-1:e")["status"] == "FILLED"
    assert store.get("strategy_events", "TP_SL_PLACED:oco-1")["kind"] == "OCO"
    assert guard(store, "oco-1") is None


@pytest.mark.parametrize("venue", [{"spot_oco_allowed": False}], indirect=True)
def test_oco_refused_places_separate_tp_and_sl_and_links_them(r, env, venue):  # noqa: F811
    s, store = env
    intent, tp, sl = protected_entry(venue, "sep-1")
    with ThreadWorker(S4, r, s, "s4-a", store):
        res = placed(r, store, intent)
        assert res["status"] == "ACCEPTED" and res["leg"] == "sl" and res["reason"] == "separate_tp_sl"
        assert "OCO orders are not supported" in store.get("orders", "sep-1:osl")["reason"]
        assert symbol_info(venue)["ocoAllowed"] is False
        assert store.get("orders", "sep-1:otp")["status"] == "REJECTED"
        open_ = {o.type: o for o in spot(venue).open_orders("BTCUSDT")}
        assert set(open_) == {"LIMIT_MAKER", "STOP_LOSS_LIMIT"} and {o.list_id for o in open_.values()} == {""}
        assert open_["LIMIT_MAKER"].price == tp and open_["STOP_LOSS_LIMIT"].stop_price == sl
        assert open_["STOP_LOSS_LIMIT"].client_order_id == client_order_id("sep-1", "sl")
        # A trade through the stop: the venue triggers and fills it; S4's watch then cancels the TP,
        # which nothing at the venue links to the stop.
        market_at(venue, "trade", sl - Decimal("1"))
        wait_until(lambda: spot(venue).query("BTCUSDT", client_order_id("sep-1", "tp")).status == "CANCELED",
                   timeout=20, message="TP cancelled after the stop filled")
    assert spot(venue).query("BTCUSDT", client_order_id("sep-1", "sl")).status == "FILLED"
    assert store.get("orders", "sep-1:sl")["status"] == "FILLED"
    assert store.get("orders", "sep-1:tp")["status"] == "CANCELED"
    assert spot(venue).open_orders("BTCUSDT") == []
    assert len(engine_orders(venue, side="SELL", status="FILLED")) == 1


NO_COND = pytest.mark.parametrize("venue", [{"spot_disabled_order_types": NO_CONDITIONAL}], indirect=True)


def _arm_guard_in_victim(r, s, store, venue, iid: str, **env_extra) -> tuple[subprocess.Popen, Decimal]:
    intent, tp, sl = protected_entry(venue, iid)
    submit(r, intent)
    victim = spawn("tests.integration.test_router_b1:CRASH_SPEC", "victim", s, CHIMERA_VENUE_URL=venue.base_url,
                   **env_extra)
    wait_until(lambda: done(store, iid), timeout=60, message="guard armed by the victim")
    return victim, sl


def _assert_one_guard_exit(r, store, venue, iid: str) -> None:
    exit_id = f"{iid}:guard"
    res = wait_until(lambda: done(store, exit_id), timeout=30, message="guard exit done")["result"]
    assert res["status"] == "FILLED" and Decimal(res["filled_qty"]) == HELD
    sells = engine_orders(venue, side="SELL", status="FILLED")
    assert [o.client_id for o in sells] == [client_order_id(exit_id, "mkt")] and sells[0].type == "MARKET"
    assert sells[0].executed_qty == HELD
    assert spot(venue).query("BTCUSDT", client_order_id(iid, "tp")).status == "CANCELED"
    assert spot(venue).open_orders("BTCUSDT") == []
    assert guard(store, iid).state == "FIRED" and int(r.hget(keys.ROUTER_COUNTERS, "guard_fired_count")) == 1


@NO_COND
def test_no_conditional_orders_arms_a_guard_that_survives_a_sigkilled_monitor(r, env, venue):  # noqa: F811
    s, store = env
    victim, sl = _arm_guard_in_victim(r, s, store, venue, "grd-1")
    try:
        res = done(store, "grd-1")["result"]
        assert res["leg"] == "guard" and res["reason"].startswith("guard_stop")
        assert "Stop loss limit orders are not supported" in store.get("orders", "grd-1:sl")["reason"]
        assert symbol_info(venue)["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET"]
        assert guard(store, "grd-1").state == "ARMED" and guard(store, "grd-1").sl_price == sl
        assert [o.type for o in spot(venue).open_orders("BTCUSDT")] == ["LIMIT_MAKER"]  # the TP stays at the venue
        victim.kill()  # SIGKILL between arm and fire
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    market_at(venue, "book", sl - Decimal("5"))  # mid below the stop while no monitor runs
    assert guard(store, "grd-1").state == "ARMED"
    # Two monitors after the restart: the compare-and-set lets one of them fire.
    with ThreadWorker(S4, r, s, "s4-b", store), ThreadWorker(S4, r, s, "s4-c", store):
        _assert_one_guard_exit(r, store, venue, "grd-1")


@NO_COND
def test_guard_monitor_killed_between_fire_and_exit_still_sends_one_exit(r, env, venue):  # noqa: F811
    s, store = env
    victim, sl = _arm_guard_in_victim(r, s, store, venue, "grd-2", ROUTER_CRASH_AT="after_guard_fired")
    try:
        market_at(venue, "book", sl - Decimal("5"))
        assert victim.wait(60) < 0  # killed itself right after ARMED -> FIRED
    finally:
        if victim.poll() is None:
            victim.kill()
    assert guard(store, "grd-2").state == "FIRED" and store.get("order_intents", "grd-2:guard") is None
    with ThreadWorker(S4, r, s, "s4-b", store):
        _assert_one_guard_exit(r, store, venue, "grd-2")


def test_guard_policy_disarms_when_the_take_profit_fills(r, env, venue):  # noqa: F811
    s, store = env
    intent, tp, sl = protected_entry(venue, "gtp-1", policy="GUARD")
    with ThreadWorker(S4, r, s, "s4-a", store):
        placed(r, store, intent)
        assert guard(store, "gtp-1").state == "ARMED"
        market_at(venue, "trade", tp + Decimal("1"))  # trades through the TP: it fills as maker
        wait_until(lambda: guard(store, "gtp-1").state == "DISARMED", timeout=20, message="guard disarmed")
        market_at(venue, "book", sl - Decimal("5"))  # a disarmed guard cannot move to FIRED any more
    assert store.get("orders", "gtp-1:tp")["status"] == "FILLED"
    assert store.get("order_intents", "gtp-1:guard") is None
    assert [o.client_id for o in engine_orders(venue, side="SELL")] == [client_order_id("gtp-1", "tp")]
