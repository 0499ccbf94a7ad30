"""S3 against real Redis (standalone and cluster): guards, the budget race, runtime parity."""

from __future__ import annotations

import copy
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from types import MappingProxyType

import pytest

from chimera.handlers.features.engine import FeatureEngine
from chimera.handlers.strategy import killswitch, lifecycle
from chimera.handlers.strategy.engine import Signal, decide
from chimera.handlers.strategy.replay import _bars
from chimera.handlers.strategy.role import SPEC
from chimera.risk.state import (
    BUDGET_EXHAUSTED,
    OK,
    Limits,
    RedisState,
    Usage,
)
from chimera.schemas.envelope import decode, to_builtins
from chimera.schemas.messages import FeaturesComputed, OrderResult
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig, activate
from chimera.workers.handler import Context
from chimera.workers.inprocess import InProcessRuntime
from chimera.workers.runtime import Worker
from tests.support.polling import wait_until
from tests.unit.test_strategy_engine import BUNDLE, FEATS, T0, mem_store

_rev = iter(range(5000, 10**6))


def _ctx(r, store, **over) -> Context:
    body = copy.deepcopy(BUNDLE)
    body["strategy"].update(over)
    return Context(clock=ManualClock(T0), store=store, config=ActiveConfig("it", next(_rev), MappingProxyType(body)),
                   redis=r)


def _decide(ctx, sid, **kw):
    return decide(Signal(sid, "BTCUSDT", T0, dict(FEATS), **kw), ctx)[0].payload


def test_guards_read_redis_state(r):
    store = mem_store()
    st = RedisState(r)
    producer = Producer(r, ManualClock(T0))
    for i, mode in enumerate(("HALT_NEW", "REDUCE_ONLY", "FLATTEN")):
        killswitch.set_kill_switch(st, mode, set_by="ops", reason="drill", ttl_ms=60_000, now_ms=T0,
                                   producer=producer)
        assert 0 < r.pttl(keys.KILL_SWITCH) <= 60_000
        assert _decide(_ctx(r, store), f"k{i}").reason == f"KILL_SWITCH_{mode}"
    killswitch.clear_kill_switch(st, cleared_by="ops", reason="done", now_ms=T0, producer=producer)
    audits = [decode(f).payload for _, f in r.xrange(keys.OPS_EVENTS)]
    assert [a.kind for a in audits] == ["KILL_SWITCH_SET"] * 3 + ["KILL_SWITCH_CLEARED"]
    killswitch.set_kill_switch(st, "HALT_NEW", set_by="ops", reason="short", ttl_ms=50, now_ms=T0)
    wait_until(lambda: r.get(keys.KILL_SWITCH) is None, timeout=5, message="kill switch TTL")

    r.set(keys.HEALTH_STATE, "RED")
    assert _decide(_ctx(r, store), "h1").reason == "HEALTH_RED"
    r.set(keys.HEALTH_STATE, json.dumps({"level": "YELLOW"}))
    d = _decide(_ctx(r, store), "h2")
    assert d.action == "open" and d.size_mult == 0.75
    r.set(keys.REGIME_STATE, json.dumps({"state": "FROZEN", "rev": 3}))
    assert _decide(_ctx(r, store), "g1").reason == "REGIME_FROZEN"


def test_fifty_decisions_race_for_the_last_budget_slot(r, tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/race.sqlite")
    st = RedisState(r)
    limits = dict(risk={"fut_margin_budget_usdt": "70", "max_per_symbol": 100, "max_open_positions": 100},
                  protections={"priority_replace": True})
    # Two slots already taken by other positions: room for exactly one more 20 USDT entry.
    for pos in ("pre1", "pre2"):
        assert st.reserve(pos, "ETHUSDT", Decimal("20"), Limits(Decimal("70"), 100, 100)) == OK
    ctx = _ctx(r, store, **limits)
    with ThreadPoolExecutor(50) as pool:
        decisions = list(pool.map(lambda i: _decide(ctx, f"race{i}"), range(50)))
    opens = [d for d in decisions if d.action == "open"]
    assert len(opens) == 1
    assert {d.reason for d in decisions if d.action == "skip"} == {"RISK_BUDGET"}
    assert st.usage("BTCUSDT").open_positions == 3 and st.usage("BTCUSDT").per_symbol == 1

    winner = store.get("signals", opens[0].signal_id)["decision"]
    res = OrderResult(intent_id=winner["intent_id"], leg="entry", client_order_id="c", symbol="BTCUSDT",
                      status="FILLED", filled_qty=Decimal(winner["qty"]), avg_price=Decimal("50000"),
                      pos_id=winner["pos_id"])
    lifecycle.on_order_result(store, st, res, now_ms=T0, cause="fill")
    assert lifecycle.release_budget(st, winner["pos_id"], "BTCUSDT")  # S6 frees it when the position closes
    for pos in ("pre1", "pre2"):
        assert lifecycle.release_budget(st, pos, "ETHUSDT")
        assert not lifecycle.release_budget(st, pos, "ETHUSDT")
    assert st.usage("BTCUSDT") == st.usage("ETHUSDT")
    assert (st.usage("BTCUSDT").in_use_usdt, st.usage("BTCUSDT").open_positions) == (0, 0)
    assert int(r.get(keys.risk_concurrency("BTCUSDT"))) == 0 and int(r.get(keys.RISK_BUDGET_INUSE)) == 0


def test_increase_script_is_atomic_under_contention(r):
    st = RedisState(r)
    assert st.reserve("p", "BTCUSDT", Decimal("10"), Limits(Decimal("100"), 1, 5)) == OK
    barrier = threading.Barrier(40)

    def go(i):
        barrier.wait()
        return st.increase("p", "BTCUSDT", f"p:add{i % 20}", Decimal("10"), Decimal("100"))

    with ThreadPoolExecutor(40) as pool:
        got = list(pool.map(go, range(40)))
    # Room for 9 adds of 10 on top of the entry's 10; each add id books at most once.
    assert st.usage("BTCUSDT").in_use_usdt == Decimal("100")
    assert set(got) == {OK, BUDGET_EXHAUSTED}
    booked = r.hget(keys.RISK_RESERVATIONS, "p").decode().split("|")[3].split(",")
    assert len(booked) == len(set(booked)) == 9
    assert st.release("p", "BTCUSDT") and st.usage("BTCUSDT") == Usage(Decimal("0"), 0, 0)


def _feature_messages():
    eng, out = FeatureEngine.new("BTCUSDT"), []
    for i, bar in enumerate(_bars("BTCUSDT", 1500)):
        snap = eng.on_bar(bar)
        f = snap.features
        hot = f["rv_15"] and f["rv_60"] and f["rv_240"] and f["rv_15"] > f["rv_60"] > f["rv_240"]
        if i >= 240 and (hot or i % 25 == 0):
            out.append(FeaturesComputed(signal_id=f"BTCUSDT:{snap.t0}", t0=snap.t0, symbol="BTCUSDT",
                                        features=snap.features, flags=snap.flags))
    return out


@pytest.mark.timeout(120)
def test_in_process_and_redis_runtimes_decide_the_same(r, settings, tmp_path):
    msgs = _feature_messages()
    mem = mem_store()
    activate(mem, "sample", 7, BUNDLE)
    rt = InProcessRuntime([SPEC], store=mem, settings=settings, clock=ManualClock(T0))
    for m in msgs:
        rt.publish(keys.feat_stream("BTCUSDT"), m, idempotency_key=m.signal_id, event_time=m.t0)
    rt.run()
    assert not rt.dead

    redis_store = open_store(settings.store_url)
    activate(redis_store, "sample", 7, BUNDLE)
    worker = Worker(SPEC, r, settings=settings, store=redis_store, clock=ManualClock(T0), consumer="s3-parity")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        producer = Producer(r, ManualClock(T0))
        for m in msgs:
            producer.publish(keys.feat_stream("BTCUSDT"), m, idempotency_key=m.signal_id, event_time=m.t0)
        wait_until(lambda: r.xlen(keys.SIG_EVENTS) >= len(msgs), timeout=90, message="decisions")
    finally:
        worker.stop()
        thread.join(5)

    def payloads(entries):
        return sorted((e.idempotency_key, e.config_rev, json.dumps(to_builtins(e.payload), sort_keys=True))
                      for e in entries)

    for stream in (keys.SIG_EVENTS, keys.ORD_COMMANDS):
        redis_side = payloads(decode(f) for _, f in r.xrange(stream))
        assert redis_side == payloads(rt.entries(stream)), stream
    opens = [e for e in rt.entries(keys.SIG_EVENTS) if e.payload.action == "open"]
    assert opens, "the sample bundle should open at least once on this data"

    def decisions(store):
        return {d["_key"]: d["decision"] for d in store.query("signals")}

    assert decisions(redis_store) == decisions(mem)
