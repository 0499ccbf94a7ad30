"""The vpos role's handlers without Redis: its timers are returned Emits, a trade is booked once per
trade id, what it cannot book is a permanent error (dead letter with the reason). The venue side
(reconcile against positionRisk) runs in tests/integration/test_virtual_positions.py."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType

import pytest

from chimera.accounts import role, views
from chimera.accounts import virtual as vp
from chimera.errors import PermanentError
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Noop, Reconcile, VenueReport
from chimera.store import open_store
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context


def ctx(bundle: dict | None = None) -> Context:
    return Context(clock=ManualClock(1_000), store=open_store("memory://"), consumer="vpos-t",
                   config=ActiveConfig(bundle=MappingProxyType(bundle or {})))


def report(trade_id: int, **kw) -> Envelope:
    fields = dict(market="FUT", symbol="BTCUSDT", client_order_id="manual-1", venue_order_id="9", side="BUY",
                  order_type="MARKET", exec_type="TRADE", order_status="FILLED", qty=Decimal("0.002"),
                  last_qty=Decimal("0.002"), last_price=Decimal("30000"), commission=Decimal("0.024"),
                  commission_asset="USDT", trade_id=trade_id, ts=5) | kw
    rep = VenueReport(**fields)
    return Envelope(type="venue_report", idempotency_key=f"vr:{trade_id}:{kw}", account_id="sub1", payload=rep)


def test_on_start_reconciles_now_and_arms_one_timer_per_account():
    c = ctx({"virtual": {"accounts": ["main", "sub1"], "reconcile_ms": 5000}})
    out = role.on_start(c)
    timers = [e for e in out if e.is_timer]
    now = [e for e in out if not e.is_timer]
    assert [(e.account_id, e.due_ms, e.timer_key, e.payload.requested_by) for e in timers] == [
        ("main", 6000, keys.vpos_reconcile_timer("main"), "vpos:periodic"),
        ("sub1", 6000, keys.vpos_reconcile_timer("sub1"), "vpos:periodic")]
    assert all(e.stream == keys.VPOS_COMMANDS and isinstance(e.payload, Reconcile) for e in out)
    assert [(e.account_id, e.payload.requested_by) for e in now] == [("main", "vpos:startup"), ("sub1", "vpos:startup")]
    assert role.next_reconcile(ctx({"virtual.reconcile_ms": 0}), "main") == []  # period off


def test_a_trade_books_once_and_an_unknown_client_id_is_unassigned_with_an_event():
    c = ctx()
    out = role.SPEC.handle(report(41), c)
    assert [(e.stream, e.payload.code if e.stream == keys.ALERTS else e.payload.kind) for e in out] == [
        (keys.OPS_EVENTS, "VIRTUAL_UNASSIGNED"), (keys.ALERTS, "VIRTUAL_UNASSIGNED")]
    assert out[0].payload.detail["unassigned_qty"] == "0.002" and out[0].account_id == "sub1"
    again = report(41, venue_order_id="9")  # the same trade under another entry and key
    assert role.SPEC.handle(Envelope(type="venue_report", idempotency_key="other", account_id="sub1",
                                     payload=again.payload), c) == []
    [row] = views.virtual_positions(c.store, "sub1")
    assert (row.strategy, row.qty, row.fees, row.fills) == (vp.UNASSIGNED, Decimal("0.002"), Decimal("0.024"), 1)
    assert views.virtual_positions(c.store, "main") == [] and len(views.virtual_positions(c.store, "all")) == 1


def test_what_is_not_a_futures_trade_is_left_alone():
    c = ctx()
    new, spot, no_id = report(1, exec_type="NEW", last_qty=Decimal(0)), report(2, market="SPOT"), report(0)
    for env in (new, spot, no_id):
        assert role.SPEC.handle(env, c) == []
    assert role.SPEC.lock(new) is None and role.SPEC.lock(spot) is None  # no lock round trip for them
    assert c.store.query("virtual_books") == []


def test_unbookable_reports_and_unrouted_types_are_permanent_errors():
    c = ctx()
    with pytest.raises(PermanentError, match="position_side 'UP'"):
        role.SPEC.handle(report(3, position_side="UP"), c)
    with pytest.raises(PermanentError, match="no route"):
        role.SPEC.handle(Envelope(type="noop", idempotency_key="n", payload=Noop(n=1)), c)
    assert role.SPEC.lock(report(4)) == keys.lock_vpos("sub1", "FUT", "BTCUSDT")
