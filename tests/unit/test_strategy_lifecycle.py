"""What S3 keeps of a position: the audit of its decisions and the reservation; positions are S6's.

S6's side of the lifecycle (entry fill, failure, close, compare-and-set) is tested in
tests/unit/test_position_doc.py and tests/unit/test_positions_inprocess.py.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.strategy import lifecycle
from chimera.risk.state import OK, Limits, MemoryState
from chimera.schemas.documents.positions import Position, to_doc
from chimera.schemas.messages import OrderResult
from tests.unit.test_strategy_engine import mem_store

LIMITS = Limits(Decimal("100"), 5, 5)


def _open(store, st, pos="p1"):
    assert st.reserve(pos, "BTCUSDT", Decimal("20"), LIMITS) == OK
    return lifecycle.record_open(store, pos_id=pos, signal_id="s", intent_id="i1", symbol="BTCUSDT", side="BUY",
                                 market="FUT", qty="0.004", margin_usdt="20", now_ms=1, config_rev=1)


def test_the_audit_is_append_only_and_holds_no_state():
    store, st = mem_store(), MemoryState()
    assert _open(store, st)
    assert not lifecycle.record_open(store, pos_id="p1", signal_id="s", intent_id="i1", symbol="BTCUSDT",
                                     side="BUY", market="FUT", qty="9", margin_usdt="20", now_ms=2, config_rev=1)
    doc = store.get("strategy_events", "OPEN_DECIDED:p1")
    assert doc["qty"] == "0.004" and "state" not in doc  # the first record stays; nothing in it is a state
    res = OrderResult(intent_id="i1", leg="e", client_order_id="c", symbol="BTCUSDT", status="FILLED",
                      filled_qty=Decimal("0.004"), avg_price=Decimal("50000"), pos_id="p1")
    assert lifecycle.on_order_result(store, st, res, now_ms=3, cause="r1") == []
    assert store.get("strategy_events", "ENTRY_RESULT:i1:e:FILLED")["filled_qty"] == "0.004"
    assert store.get("positions", "p1") is None  # S3 never writes the position
    assert st.usage("BTCUSDT").open_positions == 1  # the reservation is held until S6 closes or fails it


def test_rollback_gives_the_reservation_back_once():
    store, st = mem_store(), MemoryState()
    _open(store, st)
    assert lifecycle.rollback(store, st, "p1", "BTCUSDT", now_ms=5, reason="skip on replay")
    assert not lifecycle.rollback(store, st, "p1", "BTCUSDT", now_ms=6, reason="again")
    assert st.usage("BTCUSDT").in_use_usdt == 0
    assert store.get("strategy_events", "ROLLED_BACK:p1")["ts"] == 5


def test_cooldown_and_same_direction_read_s6_positions():
    store = mem_store()
    assert lifecycle.last_stop_loss(store, "BTCUSDT") is None
    for pos_id, state, reason, closed in (("a", "CLOSED", "STOP_LOSS", 10), ("b", "CLOSED", "STOP_LOSS", 30),
                                          ("c", "CLOSED", "TAKE_PROFIT", 50), ("d", "ACTIVE", "", 0)):
        store.upsert("positions", pos_id, to_doc(Position(pos_id=pos_id, symbol="BTCUSDT", side="BUY", state=state,
                                                          close_reason=reason, closed_at=closed, created_at=1)))
    assert lifecycle.last_stop_loss(store, "BTCUSDT") == 30
    assert lifecycle.same_direction(store, "BTCUSDT", "BUY", own="x") == "d"
    assert lifecycle.same_direction(store, "BTCUSDT", "BUY", own="d") == ""
    assert lifecycle.same_direction(store, "BTCUSDT", "SELL", own="x") == ""
