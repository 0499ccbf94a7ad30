"""S3 decisions without Redis: every L0 guard names its reason, rules, model gate, sizing, replay."""

from __future__ import annotations

import copy
import io
import json
import time
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import pytest

from chimera.errors import PermanentError
from chimera.handlers.strategy import killswitch
from chimera.handlers.strategy.bundle import parse
from chimera.handlers.strategy.engine import Signal, decide
from chimera.handlers.strategy.model_gate import curve_mult
from chimera.handlers.strategy.sizing import ids_for
from chimera.risk.state import MemoryState
from chimera.schemas.documents.positions import Position, to_doc
from chimera.schemas.messages import SubmitOrder
from chimera.schemas.strategy import RegimeState
from chimera.store import open_store
from chimera.store.objects import LocalObjectStore
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context

BUNDLE = json.loads((Path(__file__).resolve().parents[2] / "chimera/bundles/sample_vol_breakout.json").read_text())
T0 = 1_751_760_000_000  # 2025-07-06 00:00 UTC, a Sunday
FEATS = {"atr": 60.0, "atr_pct": 0.0012, "rv_15": 0.0012, "rv_60": 0.0010, "rv_240": 0.0008,
         "minutes_to_funding": 120.0}
_rev = iter(range(1000, 10**6))


_KEEP: list = []


def mem_store():
    """A fresh in-memory store, kept alive for the session.

    SQLiteDocumentStore names its shared-cache DB after id(self); once a store is collected its id
    can be reused while a connection lingers, and a "fresh" store would then see old documents.
    """
    store = open_store("sqlite://:memory:")
    _KEEP.append(store)
    return store


def make_ctx(strategy: dict | None = None, state=None, objects=None, **over) -> Context:
    body = copy.deepcopy(BUNDLE)
    if strategy is not None:
        body["strategy"] = strategy
    for k, v in over.items():
        body["strategy"][k] = v
    config = ActiveConfig("t", next(_rev), MappingProxyType(body))
    return Context(clock=ManualClock(T0), store=mem_store(), config=config, objects=objects,
                   risk=state or MemoryState())


def run(ctx, signal_id="s1", symbol="BTCUSDT", feats=None, t=T0, side=None):
    emits = decide(Signal(signal_id, symbol, t, dict(FEATS if feats is None else feats), side=side), ctx)
    return emits[0].payload, emits, ctx.store.get("signals", signal_id)["decision"]


def test_open_builds_a_rounded_intent_and_pending_position():
    ctx = make_ctx()
    d, emits, rec = run(ctx)
    assert d.action == "open" and d.side == "BUY" and rec["config_rev"] == ctx.config.rev
    sub = emits[1]
    assert sub.stream == keys.ORD_COMMANDS and isinstance(sub.payload, SubmitOrder)
    it = sub.payload.intent
    price = Decimal("50000.0")  # atr / atr_pct, rounded to the 0.10 tick
    assert it.qty == Decimal("0.008")  # 20 USDT * 20x / 50000 = 0.008 (stepSize 0.001)
    assert it.intent_id == ids_for("s1")[1] and it.exec_policy == "MakerThenTaker" and it.leverage == 20
    assert it.sl_price == price - Decimal("90.0") and it.tp_price == price + Decimal("180.0")
    # S3 keeps the decision and the reservation; the position record is S6's (none until S4 answers).
    assert ctx.store.get("strategy_events", f"OPEN_DECIDED:{it.pos_id}")["intent_id"] == it.intent_id
    assert ctx.store.get("positions", it.pos_id) is None
    # Redelivery: same decision, same intent, no second reservation.
    _, again, _ = run(ctx)
    assert [e.payload for e in again] == [e.payload for e in emits]
    assert ctx.risk.usage("BTCUSDT").open_positions == 1


@pytest.mark.parametrize("setup, reason", [
    (lambda st, ctx: killswitch.set_kill_switch(st, "HALT_NEW", set_by="ops", reason="t", ttl_ms=60_000, now_ms=T0),
     "KILL_SWITCH_HALT_NEW"),
    (lambda st, ctx: killswitch.set_kill_switch(st, "REDUCE_ONLY", set_by="ops", reason="t", ttl_ms=60_000,
                                                now_ms=T0), "KILL_SWITCH_REDUCE_ONLY"),
    (lambda st, ctx: killswitch.set_kill_switch(st, "FLATTEN", set_by="ops", reason="t", ttl_ms=60_000, now_ms=T0),
     "KILL_SWITCH_FLATTEN"),
    (lambda st, ctx: st.set_health("RED", 60_000), "HEALTH_RED"),
    (lambda st, ctx: st.set_regime(RegimeState(regime="FROZEN"), 60_000), "REGIME_FROZEN"),
])
def test_state_guards_block_with_their_reason(setup, reason):
    st = MemoryState()
    ctx = make_ctx(state=st)
    setup(st, ctx)
    d, emits, rec = run(ctx)
    assert (d.action, d.reason, len(emits)) == ("skip", reason, 1)
    assert rec["reason"] == reason


def test_kill_switch_expires_and_clears_with_audit():
    now = [0]
    st = MemoryState(now_ms=lambda: now[0])
    audit = killswitch.set_kill_switch(st, "HALT_NEW", set_by="alice", reason="drill", ttl_ms=1000, now_ms=T0)
    assert audit.stream == keys.OPS_EVENTS and audit.payload.kind == "KILL_SWITCH_SET"
    assert st.kill_switch().mode == "HALT_NEW"
    now[0] = 1001
    assert st.kill_switch() is None
    killswitch.set_kill_switch(st, "FLATTEN", set_by="alice", reason="x", ttl_ms=1000, now_ms=T0)
    cleared = killswitch.clear_kill_switch(st, cleared_by="bob", reason="done", now_ms=T0)
    assert cleared.payload.kind == "KILL_SWITCH_CLEARED" and cleared.payload.detail["was_set"] == "true"
    with pytest.raises(ValueError):
        killswitch.set_kill_switch(st, "PANIC", set_by="a", reason="", ttl_ms=1, now_ms=T0)


def test_health_levels_scale_size():
    st = MemoryState()
    st.set_health("ORANGE", 60_000)
    d, emits, rec = run(make_ctx(state=st))
    assert d.action == "open" and d.size_mult == 0.5 and rec["health"] == "ORANGE"
    assert emits[1].payload.intent.qty == Decimal("0.004")


def test_other_guards():
    # Trading window: only Monday; T0 is a Sunday.
    d, *_ = run(make_ctx(trading_windows=[{"days": [0], "start": "00:00", "end": "24:00"}]))
    assert d.reason == "TRADING_WINDOW"
    d, *_ = run(make_ctx(), feats={**FEATS, "minutes_to_funding": 3.0})
    assert d.reason == "FUNDING_WINDOW"
    d, *_ = run(make_ctx(), feats={**FEATS, "rv_15": 0.0001})
    assert d.reason == "NO_SIGNAL"
    d, *_ = run(make_ctx(), feats={**FEATS, "atr_pct": 0.01, "atr": 500.0})
    assert d.reason == "RULE_SKIP"
    d, *_ = run(make_ctx(), symbol="SOLUSDT")
    assert d.reason == "SYMBOL_NOT_CONFIGURED"
    d, *_ = run(make_ctx(sizing={"margin_usdt": "0.2"}))
    assert d.reason == "MIN_NOTIONAL" or d.reason == "MIN_QTY"


def test_budget_concurrency_and_max_open():
    ctx = make_ctx(risk={"fut_margin_budget_usdt": "30", "max_per_symbol": 5, "max_open_positions": 5},
                   protections={"priority_replace": True})
    assert run(ctx, "a")[0].action == "open"
    assert run(ctx, "b")[0].reason == "RISK_BUDGET"
    ctx = make_ctx(risk={"fut_margin_budget_usdt": "500", "max_per_symbol": 1, "max_open_positions": 5},
                   protections={"priority_replace": True})
    assert run(ctx, "a")[0].action == "open"
    assert run(ctx, "b")[0].reason == "CONCURRENCY"
    ctx = make_ctx(risk={"fut_margin_budget_usdt": "500", "max_per_symbol": 5, "max_open_positions": 1})
    assert run(ctx, "a")[0].action == "open"
    assert run(ctx, "b", symbol="ETHUSDT", feats={**FEATS, "atr": 3.0, "atr_pct": 0.0012})[0].reason \
        == "MAX_OPEN_POSITIONS"


def s6_books(ctx, decision: dict, state: str, **fields) -> None:
    """What S6 writes for the decision's position (S6 does not run in these unit tests)."""
    pos = Position(pos_id=decision["pos_id"], symbol="BTCUSDT", side=decision["side"], state=state, version=1,
                   entry_intent_id=decision["intent_id"], created_at=T0, **fields)
    ctx.store.upsert("positions", pos.pos_id, to_doc(pos))


def test_same_direction_and_priority_replace_and_cooldown():
    ctx = make_ctx(risk={"fut_margin_budget_usdt": "500", "max_per_symbol": 5, "max_open_positions": 5})
    first = run(ctx, "a")[2]
    s6_books(ctx, first, "PENDING_ENTRY")
    assert run(ctx, "b")[0].reason == "SAME_DIRECTION_OPEN"
    assert run(ctx, "c", side="SELL")[0].action == "open"  # a Decide may force the other side
    s6_books(ctx, first, "CLOSED", close_reason="STOP_LOSS", closed_at=T0 + 60_000)
    ctx.risk.release(first["pos_id"], "BTCUSDT")
    assert run(ctx, "d", t=T0 + 5 * 60_000)[0].reason == "COOLDOWN_AFTER_SL"  # 30-bar cooldown
    assert run(ctx, "e", t=T0 + 31 * 60_000 + 60_000)[0].action == "open"
    replace_ctx = make_ctx(risk={"fut_margin_budget_usdt": "500", "max_per_symbol": 5, "max_open_positions": 5},
                           protections={"priority_replace": True})
    a = run(replace_ctx, "a")[2]
    s6_books(replace_ctx, a, "ACTIVE", qty=Decimal("0.008"), account_id="main", signal_id="a")
    # Same priority: no replace (trading-ci: only a higher-priority entry closes the older one).
    assert run(replace_ctx, "b")[2]["reason"] == "SAME_DIRECTION_OPEN"
    # Higher priority: the older position is exited first and this decision waits (nothing recorded).
    emits = decide(Signal("c", "BTCUSDT", T0, {**FEATS, "priority": 2}), replace_ctx)
    exit_, retry = emits
    assert exit_.stream == keys.ORD_COMMANDS and exit_.payload.intent.purpose == "EXIT"
    assert exit_.payload.intent.pos_id == a["pos_id"] and exit_.payload.intent.reduce_only
    assert exit_.payload.intent.side == "SELL" and exit_.payload.intent.qty == Decimal("0.008")
    assert retry.stream == keys.STRAT_COMMANDS and retry.due_ms == T0 + 1000 and retry.payload.signal_id == "c"
    assert replace_ctx.store.get("signals", "c").get("decision") is None
    # Once S6 closed the older position, the retried decision opens.
    s6_books(replace_ctx, a, "CLOSED", close_reason="EXIT", closed_at=T0 + 500)
    replace_ctx.risk.release(a["pos_id"], "BTCUSDT")
    d = decide(Signal("c", "BTCUSDT", T0, {**FEATS, "priority": 2}), replace_ctx)[0].payload
    assert d.action == "open"
    # Stacking: a second position on the same symbol and side opens beside the live one.
    stack_ctx = make_ctx(risk={"fut_margin_budget_usdt": "500", "max_per_symbol": 5, "max_open_positions": 5},
                         protections={"stack_same_direction": True})
    s6_books(stack_ctx, run(stack_ctx, "a")[2], "ACTIVE", qty=Decimal("0.008"), account_id="main", signal_id="a")
    assert run(stack_ctx, "b")[0].action == "open"


class SlowModel:
    def predict_proba(self, rows):
        time.sleep(1.0)
        return [[0.1, 0.9]]


class BrokenModel:
    def predict_proba(self, rows):
        raise RuntimeError("boom")


def _objects(tmp_path, model) -> LocalObjectStore:
    import joblib

    objs = LocalObjectStore(str(tmp_path))
    buf = io.BytesIO()
    joblib.dump(model, buf)
    objs.put("models/m.joblib", buf.getvalue())
    return objs


def _model_cfg(**over):
    return {"key": "models/m.joblib", "features": ["atr_pct", "rv_15"], "timeout_ms": 50,
            "curve": [[0.5, 0.0], [0.6, 1.0], [0.9, 1.5]], **over}


def test_model_gate_with_a_logistic_regression(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = [[0.0005, 0.0005], [0.0006, 0.0004], [0.0015, 0.0016], [0.0014, 0.0018]] * 5
    y = [0, 0, 1, 1] * 5
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    ctx = make_ctx(objects=_objects(tmp_path, model), model=_model_cfg(timeout_ms=2000))
    d, _, rec = run(ctx)
    assert rec["model_status"] == "ok" and 0 < d.model_p < 1
    want = curve_mult(((0.5, 0.0), (0.6, 1.0), (0.9, 1.5)), d.model_p)
    if want > 0:
        assert d.action == "open" and d.size_mult == pytest.approx(want)
    else:
        assert d.reason == "MODEL_LOW_P"


def test_model_timeout_falls_back_and_is_recorded(tmp_path):
    objs = _objects(tmp_path, SlowModel())
    started = time.monotonic()
    d, emits, rec = run(make_ctx(objects=objs, model=_model_cfg()))
    assert time.monotonic() - started < 0.8  # the deadline held; the slow thread was abandoned
    assert (d.action, d.model_p, rec["model_status"], d.size_mult) == ("open", None, "timeout", 0.5)
    assert d.reason == "ok;model_timeout_fallback"
    d, _, rec = run(make_ctx(objects=objs, model=_model_cfg(on_timeout="skip")))
    assert (d.action, d.reason, rec["model_status"]) == ("skip", "MODEL_TIMEOUT", "timeout")
    d, _, rec = run(make_ctx(objects=_objects(tmp_path, BrokenModel()), model=_model_cfg()))
    assert rec["model_status"] == "error" and d.action == "open" and d.size_mult == 0.5


def test_invalid_bundle_is_permanent():
    with pytest.raises(PermanentError, match="invalid"):
        parse({"rules": [{"id": "x", "when": "nope > 1", "then": {"size_mult": 1}}]})
    with pytest.raises(PermanentError, match="exec_policy"):
        parse({"sizing": {"market": "SPOT", "exec_policy": "TWAP"}})
    d, *_ = run(_no_strategy_ctx())
    assert d.reason == "NO_STRATEGY_CONFIG"


def _no_strategy_ctx():
    return Context(clock=ManualClock(T0), store=mem_store(), config=ActiveConfig(),
                   risk=MemoryState())


def test_spot_intent_uses_oco_and_refuses_shorts():
    ctx = make_ctx(sizing={"market": "SPOT", "exec_policy": "OCO", "margin_usdt": "20"})
    d, emits, _ = run(ctx)
    it = emits[1].payload.intent
    assert it.market == "SPOT" and it.exec_policy == "OCO" and it.leverage == 1
    assert run(ctx, "s2", side="SELL")[0].reason == "SPOT_NO_SHORT"


def test_role_s3_is_registered():
    from chimera.handlers.strategy.role import SPEC
    from chimera.ops.settings import Settings
    from chimera.workers.registry import load_spec

    spec = load_spec("strategy")
    assert spec is SPEC
    assert spec.streams(Settings(symbols=("BTCUSDT",))) == [keys.feat_stream("BTCUSDT"), keys.STRAT_COMMANDS,
                                                             keys.ORD_RESULTS]


def test_sample_bundle_trades_the_shipped_data():
    from chimera.handlers.strategy.replay import replay

    out = replay(BUNDLE, limit=3000)
    assert out["dead"] == 0 and out["alerts"] == 0
    assert out["reasons"].get("ok", 0) >= 5
    assert set(out["positions"]) <= {"CLOSED", "ACTIVE"}
