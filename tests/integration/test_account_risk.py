"""Account risk (issue #16 item 5) on real Redis (single and the 6-node cluster) and the local venue
through the official Binance SDK: execution traces, the daily drawdown breaker (soft refuses entries,
hard flattens at the venue, the next UTC day resets), max open positions per account, priority replace
closing the older position at the venue before the new entry, PROCESSING_LAG alerts."""

from __future__ import annotations

import copy
from decimal import Decimal
from types import MappingProxyType

from chimera.handlers.health.role import SPEC as S11
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.handlers.strategy.engine import Signal, decide
from chimera.risk import breaker, snapshots
from chimera.schemas.envelope import decode
from chimera.schemas.messages import Noop, OrderIntent, TimerFired
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers import traces
from chimera.workers.clock import ManualClock, WallClock
from chimera.workers.config import ActiveConfig, activate
from chimera.workers.handler import Context
from tests.integration.test_router_b1 import env, fut, submit, venue  # noqa: F401 - fixtures
from tests.support import handlers
from tests.support.polling import wait_until
from tests.support.positions import pos_events, user_data, venue_amt
from tests.support.workers import ThreadWorker
from tests.unit.test_strategy_engine import BUNDLE

EFFECT_GROUP = keys.group("t-effect")


def test_execution_traces_record_start_done_and_error_per_key(r, settings):
    producer = Producer(r, WallClock())
    producer.publish("t:in", Noop(n=1), idempotency_key="tr-good")
    producer.publish("t:in", Noop(n=2, data="boom"), idempotency_key="tr-bad")
    with ThreadWorker(handlers.EFFECT_SPEC, r, settings, "w-trace") as w:
        wait_until(lambda: w.store.get("effects", "tr-good"), timeout=20, message="good entry handled")
        wait_until(lambda: any(t["phase"] == "ERROR" and t["outcome"] == "dead"
                               for t in traces.query(r, "tr-bad", now_ms=WallClock().now_ms(),
                                                     group_names=[EFFECT_GROUP])),
                   timeout=30, message="bad entry traced as dead")
    now = WallClock().now_ms()
    good = traces.query(r, "tr-good", now_ms=now, group_names=[EFFECT_GROUP])
    assert [t["phase"] for t in good] == ["START", "DONE"]
    start, done = good
    assert start["stream"] == "t:in" and start["type"] == "noop" and start["consumer"] == "w-trace"
    assert start["entry_id"] == r.xrange("t:in")[0][0].decode()  # the stream entry it handled
    assert done["outputs"] == 1 and done["t"] >= start["t"]
    bad = traces.query(r, "tr-bad", now_ms=now, group_names=[EFFECT_GROUP])
    assert [t["phase"] for t in bad] == ["START", "ERROR"]
    assert "boom on 2" in bad[1]["reason"] and bad[1]["outcome"] == "dead"
    assert traces.query(r, "never-sent", now_ms=now, group_names=[EFFECT_GROUP]) == []
    # The trace hash expires as a whole (operator history, not an archive).
    name = keys.exec_trace(EFFECT_GROUP, start["t"] // traces.HOUR_MS)
    assert 0 < r.pttl(name) <= traces.TRACE_TTL_MS


# --- the daily drawdown breaker on the venue -------------------------------------------------------

RISK = {"soft_drawdown_usdt": "10", "hard_drawdown_usdt": "20", "sample_interval_ms": 300,
        "accounts_sampled": ["main"]}


def _events(r, stream: str, code: str) -> list:
    out = []
    for _, f in r.xrange(stream):
        e = decode(f)
        if getattr(e.payload, "kind", None) == code or getattr(e.payload, "code", None) == code:
            out.append(e)
    return out


def _strategy_ctx(r, store, now_ms: int) -> Context:
    body = copy.deepcopy(BUNDLE)
    body["account_risk"] = RISK
    return Context(clock=ManualClock(now_ms), store=store, config=ActiveConfig("brk", 1, MappingProxyType(body)),
                   redis=r)


def _entry(r, store, sid: str, now_ms: int, account: str = "main"):
    feats = {"atr": 60.0, "atr_pct": 0.0012, "rv_15": 0.0012, "rv_60": 0.0010, "rv_240": 0.0008,
             "minutes_to_funding": 120.0}
    return decide(Signal(sid, "BTCUSDT", now_ms, feats, account_id=account), _strategy_ctx(r, store, now_ms))[0].payload


def _mark(v, price: Decimal) -> None:
    v.control("/chimera/v1/market", {"events": [
        {"market": "futures", "symbol": "BTCUSDT", "kind": "mark", "price": str(price)}]})


def test_breaker_trips_soft_then_hard_flattens_at_the_venue_and_resets_next_utc_day(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "brk", 1, {"account_risk": RISK})
    with user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-brk", store), \
            ThreadWorker(S6, r, s, "s6-brk", store):
        mid = fut(venue).book("BTCUSDT").mid
        submit(r, OrderIntent(intent_id="brk-1", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.050"),
                              exec_policy="MARKET", purpose="ENTRY", sl_price=(mid * Decimal("0.9")).quantize(
                                  Decimal("0.1"))))
        wait_until(lambda: pos_events(r, "SL_ARMED"), timeout=30, message="position open and protected")
        with ThreadWorker(S11, r, s, "s11-brk", store):
            day = breaker.trade_date(WallClock().now_ms())
            opening = wait_until(lambda: store.get("account_snapshots", f"main:{day}:open"), timeout=30,
                                 message="the day's opening snapshot")
            # The opening equity is the venue's: wallet + unrealized, the position listed.
            assert Decimal(opening["equity"]) == Decimal(opening["wallet"]) + Decimal(opening["unrealized"])
            assert [(p["symbol"], Decimal(p["amt"])) for p in opening["positions"]] == [("BTCUSDT", Decimal("0.05"))]
            pos = store.get("positions", "brk-1")
            mark0 = Decimal(pos["entry_price"]) + Decimal(opening["unrealized"]) / Decimal("0.05")
            # Soft: 0.05 BTC x 300 = 15 USDT below the opening equity (soft 10, hard 20).
            _mark(venue, mark0 - 300)
            doc = wait_until(lambda: (d := store.get("account_risk", "main")) and d["level"] == "SOFT" and d,
                             timeout=30, message="breaker SOFT")
            assert Decimal("14") <= Decimal(doc["drawdown_usdt"]) <= Decimal("16")
            soft = store.get("account_risk_events", f"main:{day}:TRIPPED_SOFT")
            assert soft["previous"] == "OK" and soft["level"] == "SOFT" and soft["threshold"] == "soft_drawdown_usdt=10"
            [ops] = wait_until(lambda: _events(r, keys.OPS_EVENTS, "BREAKER_TRIPPED_SOFT"), timeout=10,
                               message="soft trip on ops:events")
            assert ops.account_id == "main" and ops.payload.detail["level"] == "SOFT"
            assert [a.payload.level for a in _events(r, keys.ALERTS, "BREAKER_TRIPPED_SOFT")] == ["WARN"]
            now = WallClock().now_ms()
            refused = _entry(r, store, "after-soft", now)
            assert refused.action == "skip" and refused.reason == "BREAKER_SOFT"
            other = _entry(r, store, "sub1-entry", now, account="sub1")
            assert other.action == "open", other  # another account still trades
            assert venue_amt(fut(venue), "BTCUSDT") == Decimal("0.05")  # soft does not close anything

            # Hard: 600 below the opening mark -> 30 USDT: the position is flattened at the venue.
            _mark(venue, mark0 - 600)
            closed = wait_until(lambda: (p := store.get("positions", "brk-1")) and p["state"] == "CLOSED" and p,
                                timeout=30, message="position flattened")
            flatten_id = f"brk-1:brk{day.replace('-', '')}"
            assert closed["close_reason"] == "FLATTEN" and closed["exit_intent_id"] == flatten_id
            assert venue_amt(fut(venue), "BTCUSDT") == 0
            intent = store.get("order_intents", flatten_id)
            assert intent["account_id"] == "main" and intent["purpose"] == "FLATTEN" and intent["reduce_only"]
            hard = store.get("account_risk_events", f"main:{day}:TRIPPED_HARD")
            assert hard["previous"] == "SOFT" and hard["flattened"] == ["brk-1"]
            assert Decimal(hard["drawdown_usdt"]) >= 20
            assert [a.payload.level for a in _events(r, keys.ALERTS, "BREAKER_TRIPPED_HARD")] == ["CRITICAL"]
            assert store.get("account_risk", "main")["level"] == "HARD"
            assert _entry(r, store, "after-hard", WallClock().now_ms()).reason == "BREAKER_HARD"
        # The next UTC day in event time: S3 no longer refuses (the stored level is yesterday's) ...
        tomorrow = breaker.day_start(WallClock().now_ms()) + breaker.DAY_MS + 60_000
        assert _entry(r, store, "next-day", tomorrow).reason != "BREAKER_HARD"
        # ... and the role's next sample, on a worker whose clock is tomorrow, resets and audits it.
        with ThreadWorker(S11, r, s, "s11-tomorrow", store, clock=ManualClock(tomorrow)):
            Producer(r, WallClock()).publish(keys.HEALTH_TIMERS, TimerFired(name="risk.sample",
                                                                            data={"account_id": "main"}),
                                             idempotency_key="risk-reset-test")
            next_day = breaker.trade_date(tomorrow)
            doc = wait_until(lambda: (d := store.get("account_risk", "main")) and d["trade_date"] == next_day and d,
                             timeout=30, message="breaker reset on the next day")
    assert doc["level"] == "OK" and Decimal(doc["drawdown_usdt"]) == 0
    reset = store.get("account_risk_events", f"main:{next_day}:RESET")
    assert reset["previous"] == "HARD" and reset["level"] == "OK"
    assert [e.payload.detail["previous"] for e in _events(r, keys.OPS_EVENTS, "BREAKER_RESET")] == ["HARD"]
    assert store.get("account_snapshots", f"main:{next_day}:open")["positions"] == []
    # The ops queries (for the gateway): the audit newest first, a trading day's snapshots.
    assert [e["kind"] for e in snapshots.breaker_events(store, "main")] == ["RESET", "TRIPPED_HARD", "TRIPPED_SOFT"]
    assert {d["kind"] for d in snapshots.query(store, "main", day)} == {"OPEN", "CLOSE", "INTERVAL"}
    assert [b["level"] for b in snapshots.breaker_states(store, "main")] == ["OK"]


# --- priority replace on the venue -----------------------------------------------------------------


def _replace_bundle(mid: Decimal) -> dict:
    body = copy.deepcopy(BUNDLE)
    st = body["strategy"]
    st["symbols"] = ["BTCUSDT"]
    st["funding"] = {"no_entry_minutes_before": 0}
    st["risk"] = {"fut_margin_budget_usdt": "1000", "max_per_symbol": 1, "max_open_positions": 5}
    st["protections"] = {"cooldown_bars_after_sl": 0, "bar_ms": 60000, "priority_replace": True}
    st["sizing"] = {**st["sizing"], "exec_policy": "MARKET", "sl_atr": 20.0, "tp_atr": 40.0}
    return body


def _signal(store, sid: str, mid: Decimal, priority: int, now_ms: int) -> None:
    """What S2 (or the gateway) stored for a signal; the ``Decide`` then asks S3 for a decision on it."""
    feats = {"mid": float(mid), "atr": float(mid) * 0.0012, "atr_pct": 0.0012, "rv_15": 0.0012, "rv_60": 0.0010,
             "rv_240": 0.0008, "minutes_to_funding": 120.0, "priority": priority}
    store.upsert("signals", sid, {"signal_id": sid, "symbol": "BTCUSDT", "t0": now_ms, "features": feats})


def _venue_order_id(v, client_id: str) -> int:
    orders = v.call(lambda: list(v.server.engine.orders.values()))
    return next(o.order_id for o in orders if o.client_id == client_id)


def test_priority_replace_closes_the_older_position_at_the_venue_before_the_new_entry(r, env, venue):  # noqa: F811
    from chimera.handlers.strategy.role import SPEC as S3
    from chimera.handlers.strategy.sizing import ids_for
    from chimera.schemas.messages import Decide

    s, store = env
    mid = fut(venue).book("BTCUSDT").mid
    activate(store, "replace", 1, _replace_bundle(mid))
    producer = Producer(r, WallClock())
    pos_a, intent_a = ids_for("pr-a")
    pos_b, intent_b = ids_for("pr-b")
    with user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-pr", store), \
            ThreadWorker(S6, r, s, "s6-pr", store), ThreadWorker(S3, r, s, "s3-pr", store):
        _signal(store, "pr-a", mid, 1, WallClock().now_ms())
        producer.publish(keys.STRAT_COMMANDS, Decide(signal_id="pr-a", symbol="BTCUSDT", side="BUY"),
                         idempotency_key="decide-pr-a")
        a = wait_until(lambda: (p := store.get("positions", pos_a)) and p["state"] == "ACTIVE" and p, timeout=30,
                       message="older position open")
        qty_a = Decimal(a["qty"])
        assert venue_amt(fut(venue), "BTCUSDT") == qty_a
        # A higher-priority entry on the same symbol and side: the older position goes first.
        _signal(store, "pr-b", mid, 2, WallClock().now_ms())
        producer.publish(keys.STRAT_COMMANDS, Decide(signal_id="pr-b", symbol="BTCUSDT", side="BUY"),
                         idempotency_key="decide-pr-b")
        b = wait_until(lambda: (p := store.get("positions", pos_b)) and p["state"] == "ACTIVE" and p, timeout=40,
                       message="new position open after the replace")
        a = store.get("positions", pos_a)
        assert a["state"] == "CLOSED" and a["close_reason"] == "EXIT" and a["exit_intent_id"] == f"{pos_a}:replace"
        assert b["created_at"] >= a["closed_at"]  # S6 saw the old one closed before the new one's first result
        # At the venue: the old position's reduce-only exit was placed (and filled) before the new entry.
        [exit_leg] = store.query("orders", {"intent_id": f"{pos_a}:replace"})
        [entry_leg] = store.query("orders", {"intent_id": intent_b})
        assert exit_leg["status"] == "FILLED" and Decimal(exit_leg["filled_qty"]) == qty_a
        assert _venue_order_id(venue, exit_leg["client_order_id"]) < _venue_order_id(venue, entry_leg["client_order_id"])
        assert venue_amt(fut(venue), "BTCUSDT") == Decimal(b["qty"])  # only the new position is held
    decision = store.get("signals", "pr-b")["decision"]
    assert decision["action"] == "open" and decision["pos_id"] == pos_b
    assert store.get("strategy_events", f"REPLACE_REQUESTED:pr-b:{pos_a}")["exit_intent_id"] == f"{pos_a}:replace"


# --- max open positions per account ----------------------------------------------------------------


def _s6_position(store, pos_id: str, account: str, state: str = "ACTIVE", symbol: str = "BTCUSDT") -> None:
    store.upsert("positions", pos_id, {"symbol": symbol, "side": "BUY", "state": state, "account_id": account,
                                       "qty": "0.01", "created_at": 1})


def test_max_open_positions_per_account_counts_s6_positions_of_that_account_only(r, settings):
    from chimera.store import open_store

    store = open_store(settings.store_url)
    body = copy.deepcopy(BUNDLE)
    body["strategy"]["risk"] = {"fut_margin_budget_usdt": "1000", "max_per_symbol": 5, "max_open_positions": 10}
    body["account_risk"] = {"max_open_positions": 1, "accounts": {"sub1": {"max_open_positions": 2}}}
    now = WallClock().now_ms()
    ctx = Context(clock=ManualClock(now), store=store, config=ActiveConfig("mx", 1, MappingProxyType(body)), redis=r)
    feats = {"atr": 3.0, "atr_pct": 0.0012, "rv_15": 0.0012, "rv_60": 0.0010, "rv_240": 0.0008,
             "minutes_to_funding": 120.0}

    def entry(sid: str, account: str):
        return decide(Signal(sid, "ETHUSDT", now, dict(feats), account_id=account), ctx)[0].payload

    _s6_position(store, "closed-main", "main", state="CLOSED")
    _s6_position(store, "adopted-main", "main")  # S5 adopted it: no reservation, still an open position
    refused = entry("mx-1", "main")
    assert refused.action == "skip" and refused.reason == "MAX_OPEN_POSITIONS_ACCOUNT"
    _s6_position(store, "sub1-a", "sub1")
    assert entry("mx-2", "sub1").action == "open"  # sub1's own limit is 2
    _s6_position(store, "sub1-b", "sub1", symbol="SOLUSDT")
    assert entry("mx-3", "sub1").reason == "MAX_OPEN_POSITIONS_ACCOUNT"
    store.update_if("positions", "adopted-main", {"state": "CLOSED"}, {})
    assert entry("mx-4", "main").action == "open"


# --- PROCESSING_LAG ----------------------------------------------------------------------------------


def test_processing_lag_alert_fires_when_a_group_is_behind(r, settings):
    import threading

    from chimera.store import open_store
    from chimera.workers.runtime import ensure_group
    from chimera.workers.scheduler_role import run_scheduler

    store = open_store(settings.store_url)
    activate(store, "lag", 1, {"health": {"lag_interval_ms": 200, "lag_alert": {"default": 5, keys.ORD_RESULTS: 50}}})
    producer = Producer(r, WallClock())
    for stream in (keys.ORD_COMMANDS, keys.ORD_RESULTS):
        ensure_group(r, stream, keys.group("s-behind"), "$")
        for i in range(12):  # nobody reads them: 12 entries behind on both streams
            producer.publish(stream, Noop(n=i), idempotency_key=f"lag-{stream}-{i}")
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(r, WallClock(), "sched-lag", stop), daemon=True)
    sched.start()
    try:
        with ThreadWorker(S11, r, settings, "s11-lag", store):
            doc = wait_until(lambda: store.get("alerts", f"lag:{keys.ORD_COMMANDS}"), timeout=30,
                             message="PROCESSING_LAG alert stored by S11")
            [first, *_] = _events(r, keys.ALERTS, "PROCESSING_LAG")
            # The next lag tick re-arms itself: a group still behind repeats, one alert counting them.
            wait_until(lambda: store.get("alerts", f"lag:{keys.ORD_COMMANDS}")["count"] >= 2, timeout=30,
                       message="the alert repeats while the group stays behind")
    finally:
        stop.set()
        sched.join(5)
    assert doc["code"] == "PROCESSING_LAG" and doc["level"] == "WARN"
    assert first.payload.context["stream"] == keys.ORD_COMMANDS and int(first.payload.context["lag"]) >= 12
    assert first.payload.context["threshold"] == "5"
    # ord:{results} is as far behind but under its own threshold (50): no alert for it.
    assert not [e for e in _events(r, keys.ALERTS, "PROCESSING_LAG") if e.payload.context["stream"] == keys.ORD_RESULTS]


def test_a_sample_the_venue_cannot_answer_alerts_and_keeps_the_breaker_sampling(settings):
    """The venue is down (nothing listens on its port): the sample raises an alert and re-arms itself
    instead of dead-lettering (which would end the sampling loop)."""
    import dataclasses

    from chimera.handlers.risk import sample
    from chimera.schemas.envelope import Envelope
    from chimera.store import open_store
    from chimera.venues.local.testing import free_port

    s = dataclasses.replace(settings, venue="paper", venue_url=f"http://127.0.0.1:{free_port()}")
    now = WallClock().now_ms()
    ctx = Context(clock=ManualClock(now), store=open_store(s.store_url), settings=s,
                  config=ActiveConfig("down", 1, MappingProxyType({"account_risk": RISK})))
    tick = Envelope(type="timer", idempotency_key="t1", payload=TimerFired(name=sample.TIMER,
                                                                           data={"account_id": "main"}))
    rearm, alert = sample.on_sample(tick, ctx)
    assert rearm.due_ms == now + sample.SAMPLE_INTERVAL_MS and rearm.timer_key == keys.risk_sample_timer("main")
    assert alert.stream == keys.ALERTS and alert.payload.code == "ACCOUNT_SAMPLE_FAILED"
    assert alert.payload.level == "WARN" and "reading equity from the venue failed" in alert.payload.message
    assert ctx.store.get("account_risk", "main") is None  # nothing decided blind
