"""S3 decides per account: the kill switch and the budget that bind a decision are its account's, and
the intent, the decision and both envelopes name that account."""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.strategy import killswitch
from chimera.handlers.strategy.engine import Signal, decide
from chimera.risk.state import MemoryState
from chimera.schemas.messages import SubmitOrder
from tests.unit.test_strategy_engine import FEATS, T0, make_ctx


def signal(sid: str, account: str = "") -> Signal:
    return Signal(sid, "BTCUSDT", T0, dict(FEATS), side="BUY", account_id=account)


def test_a_kill_switch_on_sub1_blocks_sub1_only_and_the_global_one_blocks_both():
    state = MemoryState()
    killswitch.set_kill_switch(state, "HALT_NEW", set_by="ops", reason="sub1", ttl_ms=60_000, now_ms=T0,
                               account_id="sub1")
    ctx = make_ctx(state=state)
    blocked = decide(signal("k-sub1", "sub1"), ctx)
    opened = decide(signal("k-main"), ctx)
    assert blocked[0].payload.action == "skip" and blocked[0].payload.reason == "KILL_SWITCH_HALT_NEW"
    assert blocked[0].account_id == "sub1" and blocked[0].payload.account_id == "sub1" and len(blocked) == 1
    assert opened[0].payload.action == "open" and opened[0].account_id == "main"
    sub = opened[1]
    assert isinstance(sub.payload, SubmitOrder) and sub.account_id == "main" and sub.payload.intent.account_id == "main"
    assert state.open_count("sub1") == 0 and state.open_count("main") == 1
    killswitch.set_kill_switch(state, "REDUCE_ONLY", set_by="ops", reason="all", ttl_ms=60_000, now_ms=T0)
    assert decide(signal("k-main-2"), ctx)[0].payload.reason == "KILL_SWITCH_REDUCE_ONLY"
    audit = killswitch.clear_kill_switch(state, cleared_by="ops", reason="done", now_ms=T0 + 1, account_id="sub1")
    assert audit.payload.detail["scope"] == "ACCOUNT" and audit.payload.detail["account_id"] == "sub1"
    assert state.effective_kill_switch("sub1").mode == "REDUCE_ONLY"  # the global one still binds sub1


def test_each_account_reserves_on_its_own_budget_and_the_bundle_names_the_default_account():
    state = MemoryState()
    ctx = make_ctx(state=state)
    first = decide(signal("b-sub1", "sub1"), ctx)
    intent = first[1].payload.intent
    assert (first[1].account_id, intent.account_id) == ("sub1", "sub1")
    assert state.usage("BTCUSDT", account_id="sub1").open_positions == 1
    assert state.usage("BTCUSDT", account_id="main").in_use_usdt == Decimal(0)
    # A redelivered signal answers the recorded decision: same account, no second reservation.
    again = decide(signal("b-sub1", "sub1"), ctx)
    assert again[1].account_id == "sub1" and state.open_count("sub1") == 1
    # A bundle whose strategy names sub2 trades sub2 when the signal names no account.
    ctx2 = make_ctx(state=state, account_id="sub2")
    out = decide(signal("b-bundle"), ctx2)
    assert out[1].account_id == "sub2" and out[1].payload.intent.account_id == "sub2"
    assert state.open_count("sub2") == 1 and state.open_count("main") == 0
