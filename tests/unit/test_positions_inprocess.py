"""S6 with S4 on the in-process runtime: no Redis at all, the venue engine called in-process.

Every scenario delivers one message at a time and, once the entry's first stop is at the venue, asks
the venue after each delivery whether its open position is covered by a reduce-only stop of at least
its size (B3: never a moment without full stop cover; the gap between the entry fill and its first
stop is B1's, measured in tests/integration/test_router_b1.py). What is asserted is what the venue holds: its position, its open and cancelled algo
orders, the fills it reported.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.ops.settings import Settings
from chimera.ports.venues import Venues
from chimera.ports.wiring import memory_ports
from chimera.risk.state import OK, Limits
from chimera.schemas.documents.positions import Position, from_doc
from chimera.schemas.messages import CancelOrder, MarkPrice, OrderIntent, SubmitOrder
from chimera.store import open_store
from chimera.streams import keys
from chimera.venues.binance.adapter import client_order_id
from chimera.venues.local.inprocess import InProcessExchange
from chimera.workers.clock import ManualClock
from chimera.workers.config import activate
from chimera.workers.inprocess import InProcessRuntime

SYM = "BTCUSDT"
T0 = 1_751_760_000_000
ENTRY_QTY = Decimal("0.010")
MARGIN = Decimal("25")


class Chain:
    """S4 + S6 over one in-process venue; ``deliver`` steps the runtime and checks coverage each time."""

    def __init__(self, positions: dict, **bundle: dict) -> None:
        self.clock = ManualClock(T0)
        self.store = open_store("sqlite://:memory:")
        activate(self.store, "b", 1, {"positions": {"tick_ms": 0, **positions}, **bundle})
        self.exchange = InProcessExchange(self.clock)
        s = Settings(symbols=(SYM,))
        self.ports = memory_ports(self.clock, s, venues=Venues(s, clients={"main": self.exchange.venue("main")}))
        self.rt = InProcessRuntime([S4, S6], store=self.store, settings=s, clock=self.clock, ports=self.ports)
        self.fut = self.exchange.venue("main").fut
        self.watching = False  # from the first armed stop on
        self.checks = 0
        self.uncovered: list[tuple[Decimal, list]] = []

    def market(self, price: str, mark: str | None = None) -> None:
        """One second later: the book around ``price`` and the mark (the venue's, and S1's event for S6)."""
        self.clock.set(self.clock.now_ms() + 1000)
        p = Decimal(price)
        m = Decimal(mark or price)
        self.exchange.inject({"symbol": SYM, "kind": "book", "bid": str(p - Decimal("0.1")), "bid_qty": "50",
                              "ask": str(p + Decimal("0.1")), "ask_qty": "50"},
                             {"symbol": SYM, "kind": "mark", "price": str(m)})
        now = self.clock.now_ms()
        self.rt.publish(keys.mkt_stream("perp", SYM), MarkPrice(symbol=SYM, mark_price=m, ts=now), f"mark:{now}",
                        event_time=now)
        self.deliver()

    def open_long(self, pos_id: str, sl: str) -> None:
        assert self.ports.risk.reserve(pos_id, SYM, MARGIN, Limits(Decimal("1000"), 5, 5)) == OK
        intent = OrderIntent(intent_id=pos_id, market="FUT", symbol=SYM, side="BUY", qty=ENTRY_QTY,
                             exec_policy="MARKET", sl_price=Decimal(sl), pos_id=pos_id)
        self.rt.publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), pos_id, event_time=self.clock.now_ms())
        self.deliver()
        assert self.stops(), "no stop after the entry"
        self.watching = True

    def advance(self, ms: int) -> None:
        """Event time moves on by ``ms``: the timers due by then fire (a TWAP's next slice)."""
        while self.rt.run(max_steps=1, until_ms=self.clock.now_ms() + ms):
            self.check()
        self.deliver()

    def deliver(self) -> None:
        """Until nothing is left: one delivery at a time, S1's part (the venue's reports) in between."""
        while True:
            while self.rt.run(max_steps=1):
                self.check()
            reports = self.exchange.drain_reports()
            if not reports:
                break
            for rep, key, account in reports:
                self.rt.publish(keys.VENUE_REPORTS, rep, key, account_id=account, event_time=self.clock.now_ms())
        assert not self.rt.dead, self.rt.dead

    def check(self) -> None:
        if not self.watching:
            return
        amt = self.amt()
        stops = self.stops()
        self.checks += 1
        if amt > 0 and not any(o.qty >= amt for o in stops):
            self.uncovered.append((amt, [(o.client_order_id, o.qty) for o in stops]))

    def amt(self) -> Decimal:
        return sum((abs(Decimal(p["positionAmt"])) for p in self.fut.position_risk(SYM)), Decimal(0))

    def stops(self) -> list:
        return [o for o in self.fut.open_algo_orders(SYM)
                if o.type == "STOP_MARKET" and o.reduce_only and o.side == "SELL"]

    def position(self, pos_id: str) -> Position:
        return from_doc(self.store.get("positions", pos_id))

    def commands(self) -> list[str]:
        out = []
        for env in self.rt.entries(keys.ORD_COMMANDS):
            p = env.payload
            out.append(f"submit:{p.intent.intent_id}" if isinstance(p, SubmitOrder) else
                       f"cancel:{p.intent_id}" if isinstance(p, CancelOrder) else type(p).__name__)
        return out


def sl_cid(pos_id: str, n: int) -> str:
    return client_order_id(f"{pos_id}:sl{n}", "sl")


def test_a_filled_entry_gets_its_stop_at_the_venue():
    c = Chain({})
    c.market("50000")
    c.open_long("p1", sl="49500")
    [stop] = c.stops()
    fill = c.fut.query(SYM, client_order_id("p1", "mkt")).avg_price
    # The intent's distance (mid at send 50000 - sl 49500 = 500) kept from the actual fill (the ask).
    assert c.store.get("order_intents", "p1")["arrival_mid"] == "50000.0" and fill == Decimal("50000.1")
    assert c.amt() == ENTRY_QTY and stop.qty == ENTRY_QTY and stop.stop_price == fill - 500 == Decimal("49500.1")
    assert stop.client_order_id == sl_cid("p1", 1) and stop.reduce_only
    pos = c.position("p1")
    assert (pos.state, pos.qty, pos.stop.client_order_id, pos.stop.price) == ("ACTIVE", ENTRY_QTY, sl_cid("p1", 1),
                                                                             stop.stop_price)
    assert pos.entry_price == fill
    assert c.uncovered == []


def test_the_trailing_ladder_moves_the_stop_new_before_old():
    c = Chain({"trailing_enabled": True, "trailing_steps": [[0.02, 0.005], [0.04, 0.02]]})
    c.market("50000")
    c.open_long("tr", sl="49500")
    c.market("50030")  # ROE 1.2 %: below the first step, nothing moves
    assert [o.client_order_id for o in c.stops()] == [sl_cid("tr", 1)]
    c.market("50060")  # ROE 2.4 %: step 1 locks 0.5 % ROE
    [stop] = c.stops()
    assert stop.client_order_id == sl_cid("tr", 2) and stop.stop_price == Decimal("50012.6")
    c.market("50110")  # ROE 4.4 %: step 2 locks 2 % ROE
    [stop] = c.stops()
    assert (stop.client_order_id, stop.stop_price, stop.qty) == (sl_cid("tr", 3), Decimal("50050.1"), ENTRY_QTY)
    for n in (1, 2):
        assert c.fut.query(SYM, sl_cid("tr", n), algo=True).status == "CANCELED"
    cmds = c.commands()
    for n in (1, 2):  # each replaced stop was cancelled only after its successor had been sent
        assert cmds.index(f"submit:tr:sl{n + 1}") < cmds.index(f"cancel:tr:sl{n}")
    pos = c.position("tr")
    assert (pos.trail_step, pos.stop.level, pos.stop.retired, pos.sl_price) == (2, 3, (), Decimal("50050.1"))
    assert c.uncovered == [] and c.checks >= 15  # every delivery from the first stop on


def test_the_take_profit_ladder_exits_in_parts_and_the_rest_stays_covered():
    c = Chain({"tp_ladder": [[0.03, 0.5], [0.06, 1.0]]})
    c.market("50000")
    c.open_long("tp", sl="49500")
    c.market("50080")  # ROE 3.2 %: the first rung sells half
    [stop] = c.stops()
    assert c.amt() == Decimal("0.005") == stop.qty and stop.client_order_id == sl_cid("tp", 2)
    assert c.fut.query(SYM, sl_cid("tp", 1), algo=True).status == "CANCELED"
    c.market("50160")  # ROE 6.4 %: the second rung takes the rest
    assert c.amt() == 0 and c.stops() == [] and c.fut.open_algo_orders(SYM) == []
    assert c.fut.query(SYM, client_order_id("tp:tp1", "mkt")).filled_qty == Decimal("0.005")
    assert c.fut.query(SYM, client_order_id("tp:tp2", "mkt")).filled_qty == Decimal("0.005")
    pos = c.position("tp")
    assert (pos.state, pos.close_reason, pos.exit_intent_id, pos.tp.done) == ("CLOSED", "TAKE_PROFIT", "tp:tp2", (1, 2))
    # Realized PnL from the venue's own fill prices: (50079.9 - 50000.1 + 50159.9 - 50000.1) x 0.005.
    assert pos.realized_pnl == Decimal("0.005") * (Decimal("79.8") + Decimal("159.8"))
    assert c.ports.risk.usage(SYM).in_use_usdt == 0  # the close gave S3's reservation back
    assert c.uncovered == []


def test_a_stop_fill_at_the_venue_closes_the_position():
    c = Chain({})
    c.market("50000")
    c.open_long("sf", sl="49500")
    c.market("49400", mark="49450")  # the mark crosses the stop: the venue fires it against the book
    assert c.amt() == 0 and c.fut.open_algo_orders(SYM) == []
    [fill] = [e.payload for e in c.rt.entries(keys.VENUE_REPORTS)
              if e.payload.client_order_id == sl_cid("sf", 1) and e.payload.exec_type == "TRADE"]
    pos = c.position("sf")
    assert (pos.state, pos.close_reason, pos.qty, pos.exit_intent_id) == ("CLOSED", "STOP_LOSS", 0, "sf:sl1")
    assert pos.exit_price == fill.last_price == Decimal("49399.9")
    assert pos.realized_pnl == (fill.last_price - Decimal("50000.1")) * ENTRY_QTY
    assert c.ports.risk.usage(SYM).in_use_usdt == 0
    events = [e.payload.kind for e in c.rt.entries(keys.POS_EVENTS)]
    assert events[0] == "OPENED" and events[-1] == "EXIT"


@pytest.mark.parametrize("status", ["REJECTED"])
def test_an_entry_that_never_fills_fails_and_gives_the_reservation_back(status):
    c = Chain({})
    c.market("50000")
    # Reduce-only with nothing to reduce: the venue refuses it, so the entry ends without a fill.
    assert c.ports.risk.reserve("nf", SYM, MARGIN, Limits(Decimal("1000"), 5, 5)) == OK
    intent = OrderIntent(intent_id="nf", market="FUT", symbol=SYM, side="SELL", qty=ENTRY_QTY, exec_policy="MARKET",
                         reduce_only=True, pos_id="nf")
    c.rt.publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), "nf", event_time=c.clock.now_ms())
    c.deliver()
    pos = c.position("nf")
    assert (pos.state, pos.close_reason) == ("FAILED", "ENTRY_FAILED") and c.amt() == 0
    assert c.ports.risk.usage(SYM).in_use_usdt == 0


def test_a_twap_entry_is_booked_slice_by_slice_and_the_stop_follows_each():
    c = Chain({}, router={"twap_slices": 2, "twap_interval_ms": 1000})
    c.market("50000")
    assert c.ports.risk.reserve("tw", SYM, MARGIN, Limits(Decimal("1000"), 5, 5)) == OK
    intent = OrderIntent(intent_id="tw", market="FUT", symbol=SYM, side="BUY", qty=ENTRY_QTY, exec_policy="TWAP",
                         sl_price=Decimal("49500"), pos_id="tw")
    c.rt.publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), "tw", event_time=c.clock.now_ms())
    c.deliver()
    half = ENTRY_QTY / 2
    [stop] = c.stops()
    assert c.amt() == half == stop.qty and c.position("tw").qty == half
    c.watching = True
    c.advance(1000)  # the second slice: its own result carries only its leg, the position the whole intent
    [stop] = c.stops()
    assert c.amt() == ENTRY_QTY == stop.qty == c.position("tw").qty and stop.client_order_id == sl_cid("tw", 2)
    assert c.fut.query(SYM, sl_cid("tw", 1), algo=True).status == "CANCELED"
    # Like an add, the second slice is exposed from its fill until its stop is placed (the deliveries between
    # them); the first slice stays covered all along: the old stop rests until the new one is at the venue.
    assert c.uncovered and all(max(q for _, q in stops) >= half for _, stops in c.uncovered)
