"""S6 add-ons against S3's risk budget, through S4/S6 on real Redis (standalone + cluster) and the local
venue via the official SDKs (the B3 replay: a long at ~28146 whose mark climbs, so adds come due).

Every add books qty × the pass's mark / leverage on the position's reservation before it is sent; the
expected figures below are computed from the pass's recorded mark, not by the code under test.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.risk.state import Limits, RedisState, Usage
from chimera.schemas.strategy import KillSwitchState
from chimera.streams import keys
from chimera.venues.binance.adapter import client_order_id
from chimera.workers.config import activate
from tests.integration.test_positions_b3 import SYM, open_long, step, venue  # noqa: F401 - fixture
from tests.integration.test_router_b1 import env, fut, venue_orders  # noqa: F401 - fixtures
from tests.support.polling import wait_until
from tests.support.positions import pos_events, position, tick, venue_amt
from tests.support.workers import ThreadWorker

ADDS = {"max_adds": 2, "add_step_roe": 0.001, "add_fraction": 0.5, "tick_ms": 0}
ADD_QTY = Decimal("0.005")  # 0.5 × the 0.010 entry, no regime/health multiplier
ENTRY_MARGIN = Decimal("14")  # what S3 would have reserved for the 0.010 entry
MICRO = Decimal("0.000001")


def reserve_entry(r, pos_id: str) -> tuple[RedisState, Usage]:
    budget = RedisState(r)
    start = budget.usage(SYM)
    assert budget.reserve(pos_id, SYM, ENTRY_MARGIN, Limits(Decimal("1000"), 5, 5)) == "OK"
    return budget, start


def run_adds(r, venue, store, pos_id: str, steps: int = 14) -> list[Decimal]:  # noqa: F811
    """Step the replay; the margin each sent add takes (qty × the mark of the pass that sent it / leverage)."""
    margins, count = [], 0
    for i in range(steps):
        pos = step(r, venue, store, pos_id, i)
        if pos.adds.count > count and not pos.adds.refused:
            margins.append((ADD_QTY * pos.mark / pos.leverage).quantize(MICRO))
        count = pos.adds.count
    return margins


def in_use(budget: RedisState, start: Usage) -> Decimal:
    return budget.usage(SYM).in_use_usdt - start.in_use_usdt


def test_adds_reserve_their_margin_and_the_close_returns_the_budget_to_its_start(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": ADDS})
    budget, start = reserve_entry(r, "ab-1")
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "ab-1")
        margins = run_adds(r, venue, store, "ab-1")
        assert len(margins) == 2 and venue_amt(fut(venue), SYM) == Decimal("0.020")
        assert in_use(budget, start) == ENTRY_MARGIN + sum(margins)
        assert budget.usage(SYM).open_positions == start.open_positions + 1  # adds take no position slot
        budget.set_kill_switch(KillSwitchState(mode="FLATTEN", set_by="test"), 60_000)
        tick(r, "flatten")
        wait_until(lambda: store.get("positions", "ab-1")["state"] == "CLOSED", timeout=20, message="flattened")
        budget.clear_kill_switch()
        wait_until(lambda: budget.usage(SYM) == start, timeout=10, message="budget back to its start")
    assert venue_amt(fut(venue), SYM) == 0
    assert not r.hexists(keys.RISK_RESERVATIONS, "ab-1")


def test_an_add_the_budget_cannot_hold_is_refused_with_its_reason_and_never_sent(r, env, venue):  # noqa: F811
    s, store = env
    # Entry 14 + one add (~7.04) fits in 21.5; a second add does not.
    # Its own bundle id: compiled strategies are cached per (bundle, rev) for the process.
    activate(store, "tight-budget", 1, {"positions": ADDS, "strategy": {"risk": {"fut_margin_budget_usdt": "21.5"}}})
    budget, start = reserve_entry(r, "ar-1")
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "ar-1")
        margins = run_adds(r, venue, store, "ar-1")
    adds = position(store, "ar-1").adds
    assert adds.count == 2 and adds.refused == "BUDGET_EXHAUSTED" and not adds.pending
    refused = store.get("positions_snapshots", "ar-1:add2:refused")
    assert refused["adds"]["refused"] == "BUDGET_EXHAUSTED" and refused["add_qty"] == "0.005"
    orders = venue_orders(venue)
    assert orders[client_order_id("ar-1:add1", "mkt")] == 1 and client_order_id("ar-1:add2", "mkt") not in orders
    assert venue_amt(fut(venue), SYM) == Decimal("0.015") == Decimal(store.get("positions", "ar-1")["qty"])
    assert [e.qty for e in pos_events(r, "ADDED")] == [Decimal("0.015")]
    assert len(margins) == 1 and in_use(budget, start) == ENTRY_MARGIN + margins[0]


def test_a_redelivered_add_does_not_reserve_twice(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": ADDS})
    budget, start = reserve_entry(r, "rr-1")
    # A first delivery booked add 1 and died before recording it: the pass that sends it books nothing more.
    assert budget.increase("rr-1", SYM, "rr-1:add1", Decimal("7"), Decimal("1000")) == "OK"
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "rr-1")
        margins = run_adds(r, venue, store, "rr-1")
    assert venue_orders(venue)[client_order_id("rr-1:add1", "mkt")] == 1
    assert len(margins) == 2 and in_use(budget, start) == ENTRY_MARGIN + Decimal("7") + margins[1]
    assert budget.release("rr-1", SYM) and budget.usage(SYM) == start
