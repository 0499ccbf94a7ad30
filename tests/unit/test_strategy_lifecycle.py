"""Position lifecycle: legal moves are compare-and-set writes, illegal ones are refused with an alert."""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.strategy import lifecycle
from chimera.risk.state import OK, Limits, MemoryState
from chimera.schemas.messages import Alert, OrderResult
from chimera.schemas.states import PositionEvent
from chimera.streams import keys
from tests.unit.test_strategy_engine import mem_store

LIMITS = Limits(Decimal("100"), 5, 5)


def _setup(pos="p1"):
    store, st = mem_store(), MemoryState()
    assert st.reserve(pos, "BTCUSDT", Decimal("20"), LIMITS) == OK
    lifecycle.open_position(store, pos_id=pos, signal_id="s", intent_id="i1", symbol="BTCUSDT", side="BUY",
                            market="FUT", qty="0.004", margin_usdt="20", now_ms=1, config_rev=1)
    return store, st


def _result(status, purpose="ENTRY", filled="0"):
    return OrderResult(intent_id="i1" if purpose == "ENTRY" else "x1", leg="e", client_order_id="c", symbol="BTCUSDT",
                       status=status, purpose=purpose, filled_qty=Decimal(filled), avg_price=Decimal("50000"),
                       pos_id="p1")


def _states(store):
    return [(d["from"], d["to"]) for d in store.query("strategy_events", {"kind": "TRANSITION"}, order_by="seq")]


def test_full_lifecycle_and_budget_release():
    store, st = _setup()
    assert lifecycle.on_order_result(store, st, _result("FILLED", filled="0.004"), now_ms=2, cause="r1") == []
    assert lifecycle.on_order_result(store, st, _result("FILLED", filled="0.004"), now_ms=2, cause="r1") == []
    assert lifecycle.request_close(store, st, "p1", now_ms=3).state == "PENDING_CLOSING"
    assert lifecycle.on_order_result(store, st, _result("FILLED", "EXIT", "0.004"), now_ms=4, cause="r2") == []
    doc = store.get("strategy_events", "p1")
    assert doc["state"] == "CLOSED" and doc["close_reason"] == "EXIT" and doc["entry_price"] == "50000"
    assert _states(store) == [(None, "PENDING_ENTRY"), ("PENDING_ENTRY", "ACTIVE"), ("ACTIVE", "PENDING_CLOSING"),
                              ("PENDING_CLOSING", "CLOSED")]
    assert st.usage("BTCUSDT").in_use_usdt == 0 and st.usage("BTCUSDT").open_positions == 0


def test_rejected_entry_fails_and_releases():
    store, st = _setup()
    lifecycle.on_order_result(store, st, _result("REJECTED"), now_ms=2, cause="r1")
    assert store.get("strategy_events", "p1")["state"] == "FAILED"
    assert st.usage("BTCUSDT").open_positions == 0
    assert st.release("p1", "BTCUSDT") is False  # idempotent: already free


def test_illegal_transition_is_refused_with_an_alert():
    store, st = _setup()
    lifecycle.on_order_result(store, st, _result("EXPIRED"), now_ms=2, cause="r1")
    before = store.get("strategy_events", "p1")
    emits = lifecycle.on_order_result(store, st, _result("FILLED", filled="0.004"), now_ms=3, cause="late-fill")
    assert len(emits) == 1 and emits[0].stream == keys.ALERTS and isinstance(emits[0].payload, Alert)
    assert emits[0].payload.code == "ILLEGAL_TRANSITION" and emits[0].payload.context["state"] == "FAILED"
    assert store.get("strategy_events", "p1") == before
    moved = lifecycle.transition(store, st, "p1", PositionEvent.CLOSE_REQUESTED, now_ms=4)
    assert not moved.ok and moved.state == "FAILED" and moved.emits[0].payload.code == "ILLEGAL_TRANSITION"
    unknown = lifecycle.transition(store, st, "nope", PositionEvent.ENTRY_FILLED, now_ms=4)
    assert not unknown.ok and unknown.emits[0].payload.code == "UNKNOWN_POSITION"


def test_stop_loss_close_starts_cooldown_and_canceled_stop_is_routine():
    store, st = _setup()
    lifecycle.on_order_result(store, st, _result("FILLED", filled="0.004"), now_ms=2, cause="r1")
    assert lifecycle.on_order_result(store, st, _result("CANCELED", "TAKE_PROFIT"), now_ms=3, cause="r2") == []
    lifecycle.on_order_result(store, st, _result("FILLED", "STOP", "0.004"), now_ms=5, cause="r3")
    assert store.get("strategy_events", "p1")["close_reason"] == "STOP_LOSS"
    assert lifecycle.last_stop_loss(store, "BTCUSDT") == 5


def test_compare_and_set_lets_one_of_two_racers_win():
    store, st = _setup()
    doc = store.get("strategy_events", "p1")
    assert store.update_if("strategy_events", "p1", {"state": "ACTIVE", "seq": 1}, {"state": "PENDING_ENTRY", "seq": 0})
    # A writer that read the old version loses its compare-and-set.
    assert not store.update_if("strategy_events", "p1", {"state": "FAILED", "seq": 1},
                               {"state": doc["state"], "seq": doc["seq"]})
