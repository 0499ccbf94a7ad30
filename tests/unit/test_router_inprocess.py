"""S4 on the in-process runtime: no Redis at all, the venue engine called in-process, time = event time.

The same route table and handlers as production run on ``InProcessRuntime`` (timers in its heap on a
ManualClock) against ``InProcessExchange`` (the local venue's engine with the adapter's interface).
Market states are injected as the venue's market events; every assertion reads the venue (orders, their
times, positions, leverage) or the stream the router publishes, never the router's own bookkeeping alone.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from chimera.handlers.router.role import SPEC as S4
from chimera.ports.venues import Venues
from chimera.ports.wiring import memory_ports
from chimera.schemas.messages import CancelOrder, OrderIntent, SubmitOrder
from chimera.store import open_store
from chimera.streams import keys
from chimera.venues.binance.adapter import client_order_id
from chimera.venues.local.inprocess import InProcessExchange
from chimera.workers.clock import ManualClock
from chimera.workers.config import activate
from chimera.workers.inprocess import InProcessRuntime

T0 = 1_751_760_000_000
SYM = "BTCUSDT"


class Rig:
    """The runtime, the exchange and the store of one test."""

    def __init__(self, router: dict) -> None:
        self.clock = ManualClock(T0)
        self.x = InProcessExchange(self.clock)
        self.store = open_store("memory://")
        activate(self.store, "b", 1, {"router": router})
        clients = {a: self.x.venue(a) for a in ("main", "sub1")}
        ports = memory_ports(self.clock, None, venues=Venues(clients=clients))
        self.rt = InProcessRuntime([S4], store=self.store, clock=self.clock, ports=ports)
        self.fut = self.x.venue("main").fut
        self.quote("60000.0", "60000.1")

    def quote(self, bid: str, ask: str) -> None:
        self.x.inject({"market": "futures", "symbol": SYM, "kind": "book", "bid": bid, "bid_qty": "5", "ask": ask,
                       "ask_qty": "5"}, {"market": "futures", "symbol": SYM, "kind": "mark", "price": bid})

    def trade(self, price: str) -> None:
        self.x.inject({"market": "futures", "symbol": SYM, "kind": "trade", "price": price, "qty": "1"})

    def submit(self, intent: OrderIntent) -> None:
        self.rt.publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent.intent_id)
        self.rt.run()

    def order(self, intent_id: str, leg: str):
        return self.fut.query(SYM, client_order_id(intent_id, leg))

    def position(self) -> Decimal:
        return sum((Decimal(p["positionAmt"]) for p in self.fut.position_risk(SYM)), Decimal(0))

    def venue_orders(self, prefix: str = "") -> list:
        return [o for o in self.x.engine.orders.values() if o.client_id.startswith(prefix)]

    def results(self, intent_id: str) -> list:
        return [e.payload for e in self.rt.entries(keys.ORD_RESULTS) if e.payload.intent_id == intent_id]

    def intent(self, intent_id: str) -> dict:
        return self.store.get("order_intents", intent_id)

    def counters(self) -> dict:
        return self.rt.ports.exec_metrics.counters()


def test_market_entry_sets_leverage_and_margin_once_then_fills_at_the_venue():
    rig = Rig({})
    rig.submit(OrderIntent(intent_id="m-1", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.010"), leverage=7))
    o = rig.order("m-1", "mkt")
    assert o.status == "FILLED" and o.filled_qty == Decimal("0.010") and o.avg_price == Decimal("60000.1")
    assert rig.position() == Decimal("0.010")
    row = rig.fut.position_risk(SYM)[0]
    assert int(row["leverage"]) == 7 and row["marginType"].upper() == "ISOLATED"
    assert rig.store.get("venue_settings", f"main:FUT:{SYM}")["leverage"] == 7
    res = rig.results("m-1")[-1]
    assert res.status == "FILLED" and res.filled_qty == Decimal("0.010") and res.avg_price == Decimal("60000.1")
    fills = rig.store.query("fills", {"intent_id": "m-1"})
    assert sum(Decimal(f["qty"]) for f in fills) == Decimal("0.010")
    assert all(Decimal(f["mid_at_send"]) == Decimal("60000.05") for f in fills)
    # A repeated command answers with the stored result and sends nothing.
    rig.submit(OrderIntent(intent_id="m-1", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.010"), leverage=7))
    assert rig.results("m-1")[-1] == res and len(rig.venue_orders("cmkt-")) == 1
    assert rig.rt.dead == []


def test_an_intent_trades_on_the_account_its_command_names():
    rig = Rig({})
    rig.rt.publish(keys.ORD_COMMANDS, SubmitOrder(intent=OrderIntent(intent_id="a-1", market="FUT", symbol=SYM,
                                                                     side="SELL", qty=Decimal("0.004"), leverage=5)),
                   "a-1", account_id="sub1")
    rig.rt.run()
    sub1 = rig.x.venue("sub1").fut
    assert sum(Decimal(p["positionAmt"]) for p in sub1.position_risk(SYM)) == Decimal("-0.004")
    assert int(sub1.position_risk(SYM)[0]["leverage"]) == 5
    assert rig.position() == 0  # nothing on main
    assert rig.intent("a-1")["account_id"] == "sub1" and rig.store.get("venue_settings", f"sub1:FUT:{SYM}")


def test_crossed_margin_is_refused_before_any_order():
    rig = Rig({"margin_type": "CROSSED"})  # the local venue models ISOLATED only (-1130)
    rig.submit(OrderIntent(intent_id="m-x", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.010")))
    res = rig.intent("m-x")["result"]
    assert res["status"] == "REJECTED" and res["reason"].startswith("VENUE_SETUP: -1130")
    assert rig.venue_orders() == [] and rig.position() == 0


def test_maker_times_out_on_the_event_clock_then_takes_the_rest():
    rig = Rig({"maker_wait_ms": 3000, "maker_poll_ms": 250})
    rig.submit(OrderIntent(intent_id="mk-1", market="FUT", symbol=SYM, side="SELL", qty=Decimal("0.010"),
                           exec_policy="MakerThenTaker"))
    mk = rig.order("mk-1", "mk")
    assert mk.status == "NEW" and mk.price == Decimal("60000.1")  # resting at the touch, post-only
    assert rig.rt.armed_timers() == {keys.router_timer("maker_check", "mk-1"): T0 + 250}
    rig.rt.advance_to(T0 + 2999)
    assert rig.order("mk-1", "mk").status == "NEW" and rig.intent("mk-1")["phase"] == "MAKER_WAIT"
    rig.rt.advance_to(T0 + 3000)
    assert rig.order("mk-1", "mk").status == "CANCELED"
    tk = rig.order("mk-1", "tk")
    assert tk.status == "FILLED" and tk.filled_qty == Decimal("0.010")
    assert tk.update_time == T0 + 3000  # the window lasted exactly maker_wait_ms of event time
    assert rig.position() == Decimal("-0.010")
    assert rig.intent("mk-1")["result"]["reason"] == "maker_timeout"
    assert rig.rt.armed_timers() == {}
    assert rig.counters() == {"maker_sent_count": 1, "maker_timeout_count": 1}


def test_maker_filled_inside_the_window_sends_no_taker():
    rig = Rig({"maker_wait_ms": 3000, "maker_poll_ms": 250})
    rig.submit(OrderIntent(intent_id="mk-2", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.010"),
                           exec_policy="MakerThenTaker"))
    rig.rt.advance_to(T0 + 1000)
    rig.trade("59999.0")  # the market trades through our bid
    rig.rt.advance_to(T0 + 1500)
    assert rig.order("mk-2", "mk").status == "FILLED"
    assert rig.venue_orders(client_order_id("mk-2", "tk")) == []
    assert rig.intent("mk-2")["result"]["reason"] == "maker" and rig.position() == Decimal("0.010")
    assert all(f["is_maker"] for f in rig.store.query("fills", {"intent_id": "mk-2"}))
    assert rig.rt.armed_timers() == {}
    assert rig.counters() == {"maker_sent_count": 1, "maker_filled_count": 1}


def test_twap_slices_go_out_on_their_due_times_once_each():
    rig = Rig({"twap_slices": 4, "twap_interval_ms": 1000})
    intent = OrderIntent(intent_id="tw-1", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.020"),
                         exec_policy="TWAP")
    rig.submit(intent)
    assert [o.client_id for o in rig.venue_orders("ctw")] == [client_order_id("tw-1", "tw0")]
    rig.rt.advance_to(T0 + 1500)
    rig.submit(intent)  # a redelivered command re-arms the slices not sent yet: replaced, never doubled
    rig.rt.advance_to(T0 + 5000)
    sent = {o.client_id: o for o in rig.venue_orders("ctw")}
    assert len(sent) == 4 and len(rig.venue_orders("ctw")) == 4
    for i in range(4):
        o = rig.order("tw-1", f"tw{i}")
        assert o.status == "FILLED" and o.filled_qty == Decimal("0.005") and o.update_time == T0 + i * 1000
    assert rig.position() == Decimal("0.020")
    res = rig.intent("tw-1")["result"]
    assert res["status"] == "FILLED" and Decimal(res["filled_qty"]) == Decimal("0.020")
    assert rig.rt.armed_timers() == {}


@pytest.mark.parametrize("repeats", [1, 3])
def test_cancel_with_escalation_stops_the_twap_and_closes_what_filled(repeats):
    rig = Rig({"twap_slices": 4, "twap_interval_ms": 60_000})
    rig.submit(OrderIntent(intent_id="esc-1", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.020"),
                           exec_policy="TWAP"))
    assert rig.position() == Decimal("0.005") and len(rig.rt.armed_timers()) == 3
    for n in range(repeats):  # a retrying caller: one close at the venue
        rig.rt.publish(keys.ORD_COMMANDS, CancelOrder(intent_id="esc-1", escalate_to_market=True, reason="test"),
                       f"cancel-{n}")
        rig.rt.run()
    rig.rt.advance_to(T0 + 300_000)
    assert rig.rt.armed_timers() == {}
    assert [o.client_id for o in rig.venue_orders("ctw")] == [client_order_id("esc-1", "tw0")]  # no later slice
    close = rig.order("esc-1:escalate", "mkt")
    assert close.status == "FILLED" and close.side == "SELL" and close.reduce_only and close.filled_qty == Decimal("0.005")
    assert len(rig.venue_orders("cmkt-")) == 1 and rig.position() == 0
    parent = rig.intent("esc-1")["result"]
    assert parent["status"] == "CANCELED" and Decimal(parent["filled_qty"]) == Decimal("0.005")
    assert rig.rt.dead == []


def test_cancel_of_a_resting_maker_leg_cancels_it_at_the_venue():
    rig = Rig({"maker_wait_ms": 60_000, "maker_poll_ms": 1000})
    rig.submit(OrderIntent(intent_id="mk-c", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.010"),
                           exec_policy="MakerThenTaker"))
    assert rig.order("mk-c", "mk").status == "NEW"
    rig.rt.publish(keys.ORD_COMMANDS, CancelOrder(intent_id="mk-c", reason="operator"), "cancel-mk")
    rig.rt.run()
    assert rig.order("mk-c", "mk").status == "CANCELED" and rig.rt.armed_timers() == {}
    rig.rt.advance_to(T0 + 120_000)  # nothing left to fire: no taker appears later
    assert rig.venue_orders(client_order_id("mk-c", "tk")) == [] and rig.position() == 0
    assert rig.intent("mk-c")["result"]["status"] == "CANCELED"


def test_spot_guard_fires_on_the_event_clock_and_sends_one_exit():
    rig = Rig({"guard_poll_ms": 500})
    spot = rig.x.venue("main").spot

    def spot_book(bid: str, ask: str) -> None:
        rig.x.inject({"market": "spot", "symbol": SYM, "kind": "book", "bid": bid, "bid_qty": "5", "ask": ask,
                      "ask_qty": "5"})

    spot_book("60000.00", "60000.01")
    rig.submit(OrderIntent(intent_id="g-1", market="SPOT", symbol=SYM, side="BUY", qty=Decimal("0.01000"),
                           exec_policy="GUARD", tp_price=Decimal("61000"), sl_price=Decimal("59000")))
    res = rig.intent("g-1")["result"]
    assert res["leg"] == "guard" and res["status"] == "ACCEPTED"
    held = Decimal(res["filled_qty"])
    assert [o.type for o in spot.open_orders(SYM)] == ["LIMIT_MAKER"]  # the TP rests at the venue
    rig.rt.advance_to(T0 + 2000)  # four looks above the stop: nothing happens, the watch stays armed
    assert rig.store.get("guard_stops", "g-1")["state"] == "ARMED"
    assert rig.rt.armed_timers() == {keys.router_timer("guard_check", "g-1"): T0 + 2500}
    spot_book("58990.00", "58990.01")  # mid below the stop
    rig.rt.advance_to(T0 + 2500)
    guard = rig.store.get("guard_stops", "g-1")
    assert guard["state"] == "FIRED" and guard["fired_at"] == T0 + 2500
    exit_ = spot.query(SYM, client_order_id("g-1:guard", "mkt"))
    assert exit_.status == "FILLED" and exit_.side == "SELL" and exit_.filled_qty == held
    assert exit_.update_time == T0 + 2500
    assert spot.query(SYM, client_order_id("g-1", "tp")).status == "CANCELED" and spot.open_orders(SYM) == []
    rig.rt.advance_to(T0 + 10_000)
    assert rig.rt.armed_timers() == {} and rig.counters() == {"guard_fired_count": 1}
    assert len([o for o in rig.x.engine.orders.values() if o.side == "SELL" and o.type == "MARKET"]) == 1
