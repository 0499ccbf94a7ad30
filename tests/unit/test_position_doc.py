"""The typed position document: decoding what is stored (old and hand-written documents too), exact
money, compare-and-set on the version, and the transition table guarding every move."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType

import pytest

from chimera.errors import PermanentError
from chimera.handlers.positions.common import PE, Conflict, create, load, moved, save
from chimera.schemas.documents.positions import Position, Stop, StopStep, from_doc, replace, to_doc
from chimera.store import open_store
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context


def ctx() -> Context:
    return Context(clock=ManualClock(1_000), store=open_store("sqlite://:memory:"),
                   config=ActiveConfig("t", 1, MappingProxyType({})))


def test_money_round_trips_exactly_and_sub_structs_survive_the_store():
    c = ctx()
    pos = Position(pos_id="p", symbol="BTCUSDT", side="SELL", qty=Decimal("0.010"), entry_price=Decimal("50000.10"),
                   fills_in={"p": (Decimal("0.010"), Decimal("500.0010"))}, realized_pnl=Decimal("-0.00000001"),
                   stop=Stop(level=2, intent_id="p:sl2", price=Decimal("50100.0"), qty=Decimal("0.010"), n=3,
                             pending=StopStep(n=3, intent_id="p:sl3", price=Decimal("50050.0"), qty=Decimal("0.010")),
                             retired=("p:sl1",)))
    stored = create(c, pos)
    assert stored == replace(pos, version=1, created_at=1_000, updated_at=1_000)
    doc = c.store.get("positions", "p")
    assert doc["entry_price"] == "50000.10" and doc["realized_pnl"] == "-1E-8" and doc["stop"]["pending"]["n"] == 3
    assert stored.stop.live_intents() == ["p:sl2", "p:sl3", "p:sl1"]


def test_a_hand_written_or_old_document_decodes_with_defaults():
    pos = from_doc({"_key": "ghost", "symbol": "BTCUSDT", "side": "BUY", "qty": "0.020", "state": "ACTIVE",
                    "sl_level": 3, "entry_price": None})
    assert (pos.pos_id, pos.qty, pos.version, pos.stop, pos.realized_pnl) == ("ghost", Decimal("0.020"), 0, Stop(),
                                                                             Decimal(0))
    assert from_doc({**to_doc(pos), "_key": "ghost"}) == pos


def test_compare_and_set_lets_one_of_two_writers_win():
    c = ctx()
    first = create(c, Position(pos_id="p", symbol="BTCUSDT", side="BUY"))
    winner = save(c, first, moved(first, PE.ENTRY_FILLED, qty=Decimal("0.010")))
    assert winner.version == 2 and load(c, "p") == winner
    with pytest.raises(Conflict):  # read version 1 too, writes after the winner: refused, nothing written
        save(c, first, moved(first, PE.ENTRY_FAILED))
    assert load(c, "p").state == "ACTIVE"
    # A document without a version (written by hand) is compared on the version's absence.
    c.store.upsert("positions", "h", {"symbol": "BTCUSDT", "side": "BUY", "qty": "1", "state": "ACTIVE"})
    hand = load(c, "h")
    assert save(c, hand, replace(hand, qty=Decimal(2))).version == 1
    with pytest.raises(Conflict):
        save(c, hand, replace(hand, qty=Decimal(3)))


def test_the_transition_table_refuses_an_illegal_move():
    failed = moved(Position(pos_id="p"), PE.ENTRY_FAILED)
    assert failed.state == "FAILED"
    with pytest.raises(PermanentError, match="illegal transition"):
        moved(failed, PE.ENTRY_FILLED)
