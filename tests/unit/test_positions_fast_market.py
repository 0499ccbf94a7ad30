"""Protection that holds in fast markets (issue 12 item 4), in-process with the venue engine, no Redis:
the stop comes from the actual fill, is checked against the mark before it is sent, and the futures
take-profit rests at the venue until it or the stop fills (the close cancels the other)."""

from __future__ import annotations

from decimal import Decimal

from chimera.risk.state import OK, Limits
from chimera.schemas.documents.positions import Position, to_doc
from chimera.schemas.messages import ManagePositions, OrderIntent, SubmitOrder
from chimera.schemas.strategy import KillSwitchState
from chimera.streams import keys
from chimera.venues.binance.adapter import client_order_id
from tests.unit.test_positions_inprocess import ENTRY_QTY, MARGIN, SYM, Chain, sl_cid


def enter(c: Chain, pos_id: str, *, sl: str, tp: str | None = None, signal: str = "", side: str = "BUY") -> None:
    assert c.ports.risk.reserve(pos_id, SYM, MARGIN, Limits(Decimal("1000"), 5, 5)) == OK
    intent = OrderIntent(intent_id=pos_id, market="FUT", symbol=SYM, side=side, qty=ENTRY_QTY, exec_policy="MARKET",
                         sl_price=Decimal(sl), tp_price=Decimal(tp) if tp else None, pos_id=pos_id, signal_id=signal)
    c.rt.publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), pos_id, event_time=c.clock.now_ms())
    c.deliver()


def tp_cid(pos_id: str) -> str:
    return client_order_id(f"{pos_id}:tpo", "tp")


def test_a_fill_far_from_the_decision_keeps_the_decision_distance_not_its_price():
    c = Chain({})
    # S3 decided at 51000 with a stop 500 below; the market then fell to 50000 before the entry filled.
    c.store.upsert("signals", "sig-1", {"signal_id": "sig-1", "decision": {"price": "51000", "action": "open"}})
    c.market("50000")
    enter(c, "gap", sl="50500", signal="sig-1")  # 50500 is above the market: as a price it would trigger at once
    [stop] = c.stops()
    fill = c.fut.query(SYM, client_order_id("gap", "mkt")).avg_price
    assert stop.stop_price == fill - 500 == Decimal("49500.1") and stop.qty == ENTRY_QTY
    pos = c.position("gap")
    assert (pos.state, pos.reference_price, pos.sl_price) == ("ACTIVE", Decimal("51000"), stop.stop_price)


def test_a_stop_already_through_the_mark_is_not_sent_the_position_exits_at_market():
    c = Chain({})
    c.market("50000", mark="49400")  # the mark has run ahead of the book: the stop (~49500) is already through it
    enter(c, "thru", sl="49500")
    assert c.amt() == 0 and c.fut.open_algo_orders(SYM) == []
    # The venue refused the stop (-2021, checked against its mark) and nothing else protects it: out at once.
    assert "-2021" in c.store.get("order_intents", "thru:sl1")["result"]["reason"]
    assert c.fut.query(SYM, client_order_id("thru:exit-sl1", "mkt")).filled_qty == ENTRY_QTY
    pos = c.position("thru")
    assert (pos.state, pos.close_reason, pos.exit_intent_id, pos.stop.intent_id) == ("CLOSED", "EXIT",
                                                                                    "thru:exit-sl1", "")
    [alert] = [e.payload for e in c.rt.entries(keys.ALERTS)]
    assert alert.code == "STOP_WOULD_TRIGGER" and alert.context["pos_id"] == "thru"
    assert c.ports.risk.usage(SYM).in_use_usdt == 0


def test_the_take_profit_rests_at_the_venue_and_the_stop_fill_cancels_it():
    c = Chain({})
    c.market("50000")
    enter(c, "tpa", sl="49500", tp="51000")
    [tp] = [o for o in c.fut.open_algo_orders(SYM) if o.type == "TAKE_PROFIT_MARKET"]
    assert (tp.client_order_id, tp.stop_price, tp.qty, tp.reduce_only, tp.side) == (
        tp_cid("tpa"), Decimal("51000.1"), ENTRY_QTY, True, "SELL")
    assert c.position("tpa").take_profit.status == "ARMED"
    c.market("49400", mark="49450")  # the stop fires
    assert c.amt() == 0 and c.fut.open_algo_orders(SYM) == []
    assert c.fut.query(SYM, tp_cid("tpa"), algo=True).status == "CANCELED"
    pos = c.position("tpa")
    assert (pos.state, pos.close_reason) == ("CLOSED", "STOP_LOSS")


def test_a_take_profit_at_or_below_zero_is_not_sent_the_stop_still_protects():
    """A short whose target is a wide ATR multiple below a volatile market: the target is not a price. It
    used to go to the venue and come back refused (-4001 "Price less than 0")."""
    c = Chain({})
    c.store.upsert("signals", "sig-z", {"signal_id": "sig-z", "decision": {"price": "50000", "action": "open"}})
    c.market("50000")
    enter(c, "tpz", sl="50500", tp="-100", signal="sig-z", side="SELL")
    assert c.amt() == ENTRY_QTY and c.position("tpz").side == "SELL"
    orders = c.fut.open_algo_orders(SYM)
    assert [o.type for o in orders] == ["STOP_MARKET"] and orders[0].side == "BUY"
    assert c.store.get("order_intents", "tpz:tpo") is None  # no take-profit was asked of S4
    pos = c.position("tpz")
    assert (pos.state, pos.tp_price, pos.take_profit.intent_id) == ("ACTIVE", None, "")
    assert c.uncovered == []


def test_the_take_profit_fill_closes_the_position_and_cancels_the_stop():
    c = Chain({})
    c.market("50000")
    enter(c, "tpb", sl="49500", tp="51000")
    c.market("51100", mark="51050")  # the mark reaches the take-profit
    assert c.amt() == 0 and c.fut.open_algo_orders(SYM) == []
    assert c.fut.query(SYM, sl_cid("tpb", 1), algo=True).status == "CANCELED"
    pos = c.position("tpb")
    assert (pos.state, pos.close_reason, pos.exit_intent_id) == ("CLOSED", "TAKE_PROFIT", "tpb:tpo")
    assert pos.realized_pnl > 0 and c.ports.risk.usage(SYM).in_use_usdt == 0
    assert c.uncovered == []


def test_an_adl_reported_by_the_venue_closes_the_position_with_the_venues_pnl_and_fee():
    c = Chain({})
    c.market("50000")
    enter(c, "adl", sl="49500")
    c.market("50200")
    c.exchange.deleverage("main", SYM)  # the venue takes the position (auto-deleveraging)
    c.deliver()  # S1's part: the venue's report of its adl_autoclose order reaches S6
    assert c.amt() == 0 and c.fut.open_algo_orders(SYM) == []  # the stop no longer rests
    [fo] = c.fut.force_orders(SYM)
    [trade] = c.fut.trades(SYM, str(fo["orderId"]))
    pos = c.position("adl")
    assert (pos.state, pos.close_reason, pos.exit_price) == ("CLOSED", "ADL", Decimal(fo["avgPrice"]))
    # Its money is the venue's: the ADL trade's PnL and fee plus the entry's commission (complete accounting).
    legs = [d for d in c.store.query("orders", {"intent_id": "adl"}) if d.get("venue_order_id")]
    entry_fees = sum((Decimal(t["commission"]) for d in legs for t in c.fut.trades(SYM, d["venue_order_id"])),
                     Decimal(0))
    assert entry_fees > 0
    assert pos.realized_pnl == Decimal(trade["realizedPnl"]) and pos.fees == Decimal(trade["commission"]) + entry_fees
    fill = c.store.get("fills", f"FUT:{SYM}:{trade['id']}")
    assert (fill["purpose"], fill["pos_id"], Decimal(fill["realized_pnl"])) == ("ADL", "adl", pos.realized_pnl)
    assert c.store.get("liquidations", f"main:{fo['orderId']}")["pos_ids"] == ["adl"]
    assert [a.payload.code for a in c.rt.entries(keys.ALERTS)] == ["POSITION_GONE_AT_VENUE"]
    assert c.ports.risk.usage(SYM).in_use_usdt == 0


def test_a_refused_exit_asks_the_venue_and_books_what_happened():
    c = Chain({})
    c.market("50000")
    enter(c, "rx", sl="49500")
    c.exchange.deleverage("main", SYM)
    c.exchange.drain_reports()  # its report is lost: S6 still thinks the position is open
    assert c.position("rx").state == "ACTIVE" and c.amt() == 0
    c.ports.risk.set_kill_switch(KillSwitchState(mode="FLATTEN", set_by="test"), 60_000)
    c.rt.publish(keys.POS_COMMANDS, ManagePositions(pos_id="rx"), "tick-1", event_time=c.clock.now_ms())
    c.deliver()  # the flatten is refused (reduce-only, nothing to reduce): S6 asks the venue
    flatten = c.store.get("order_intents", "rx:flatten")
    assert flatten["result"]["status"] == "REJECTED"
    pos = c.position("rx")
    assert (pos.state, pos.close_reason) == ("CLOSED", "ADL") and pos.realized_pnl != 0
    assert c.fut.open_algo_orders(SYM) == []  # the stop left behind is cancelled by the close
    assert "POSITION_GONE_AT_VENUE" in [a.payload.code for a in c.rt.entries(keys.ALERTS)]


def test_a_pass_finding_no_stop_armed_and_the_mark_through_it_exits_at_once():
    c = Chain({})
    c.market("50000")
    # A position whose stop never made it to the venue (e.g. refused while the market gapped).
    c.fut.new_order(symbol=SYM, side="BUY", type="MARKET", qty=ENTRY_QTY, client_id=client_order_id("un", "mkt"))
    c.store.upsert("positions", "un", to_doc(Position(
        pos_id="un", symbol=SYM, side="BUY", state="ACTIVE", version=1, qty=ENTRY_QTY, entry_price=Decimal("50000.1"),
        entry_intent_id="un", sl_price=Decimal("49500.1"), created_at=c.clock.now_ms())))
    c.market("49400", mark="49450")
    assert c.amt() == 0
    pos = c.position("un")
    assert (pos.state, pos.close_reason, pos.exit_intent_id) == ("CLOSED", "EXIT", "un:exit-v1")
    assert [a.payload.code for a in c.rt.entries(keys.ALERTS)] == ["UNPROTECTED_THROUGH_STOP"]
    assert sl_cid("un", 1) not in {o.client_order_id for o in c.fut.open_algo_orders(SYM)}
