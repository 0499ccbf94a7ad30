"""S11 on real Redis (single server and the 6-node cluster): grade with TTL, alerts, downsampling,
daily strategy metrics. The worker is the real runtime in a thread, timers go through the real
scheduler."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from decimal import Decimal

import pytest

from chimera.handlers.health import alerts as alert_svc
from chimera.handlers.health.role import SPEC
from chimera.handlers.health.series import bucket_key
from chimera.risk.state import RedisState
from chimera.schemas.envelope import decode
from chimera.schemas.messages import Alert, MetricEvent
from chimera.store import open_store
from chimera.store.collections import ALERTS, METRICS_TIMESERIES, STRATEGY_METRICS_DAILY
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.scheduler_role import run_scheduler
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

BUNDLE = {"health": {"interval_ms": 150, "ttl_ms": 1500, "min_samples": 20, "equity_usdt": "1000",
                     "thresholds": {"stream_lag": {"yellow": 100000}}},
          "notifier": {"channels": {"ops": {"type": "webhook", "url": "http://127.0.0.1:9/none"}}}}


@contextmanager
def running_s11(r, settings, store, consumer: str):
    """The s11 role in a worker thread plus the scheduler that fires its grading timers."""
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(r, WallClock(), f"sched-{consumer}", stop), daemon=True)
    sched.start()
    try:
        with ThreadWorker(SPEC, r, settings, consumer, store=store):
            yield store
    finally:
        stop.set()
        sched.join(5)


@pytest.fixture
def stack(r, settings):
    store = open_store(settings.store_url)
    activate(store, "health-test", 1, BUNDLE)
    with running_s11(r, settings, store, "s11-test"):
        yield store


def _level(r) -> str | None:
    return RedisState(r).health()


def _outbox(r) -> list:
    return [decode(f) for _id, f in r.xrange(keys.NOTIFY_OUTBOX)] if r.exists(keys.NOTIFY_OUTBOX) else []


def test_grade_from_router_figures_with_ttl_alert_and_recovery(r, stack):
    store = stack
    # What S4 writes: 40 maker legs rested, 6 filled -> fill ratio 0.15 < 0.20: RED.
    r.hset(keys.ROUTER_COUNTERS, mapping={"maker_sent_count": 40, "maker_filled_count": 6})
    wait_until(lambda: _level(r) == "RED", 15, message="grade RED")
    ttl = r.pttl(keys.HEALTH_STATE)
    assert 0 < ttl <= 1500
    doc = wait_until(lambda: store.get(ALERTS, "health:system"), 10, message="health alert")
    assert doc["level"] == "ERROR" and doc["state"] == "OPEN" and "maker_fill_ratio" in doc["message"]
    graded = [decode(f).payload for _id, f in r.xrange(keys.OPS_EVENTS)]
    assert any(p.kind == "HEALTH_GRADED" and p.detail["level"] == "RED" and "maker_fill_ratio" in p.detail for p in graded)
    # An ERROR alert is routed to the configured channel: one Notify on the outbox.
    notes = wait_until(lambda: [e for e in _outbox(r) if e.payload.data.get("alert_key") == "health:system"], 10,
                       message="Notify for the RED alert")
    assert notes[0].payload.channel == "ops" and notes[0].payload.level == "ERROR"

    r.hset(keys.ROUTER_COUNTERS, mapping={"maker_sent_count": 40, "maker_filled_count": 38})
    wait_until(lambda: _level(r) == "GREEN", 15, message="grade back to GREEN")
    wait_until(lambda: store.get(ALERTS, "health:system")["state"] == "RESOLVED", 10, message="alert resolved")


def test_stale_grade_expires(r, settings):
    store = open_store(settings.store_url)
    activate(store, "health-test", 1, BUNDLE)
    # The worker grades every 150 ms while it runs, with a 1.5 s TTL.
    with running_s11(r, settings, store, "s11-stale"):
        wait_until(lambda: _level(r) is not None, 15, message="a first grade")
    # The worker is gone: the grade must vanish within its TTL (readers then see STALE).
    wait_until(lambda: _level(r) is None, 5, interval=0.05, message="grade expired")


def test_alerts_dedup_ack_resolve_reopen(r, stack):
    store = stack
    prod = Producer(r, WallClock())

    def raise_(idem, level="WARN"):
        prod.publish(keys.ALERTS, Alert(level=level, code="WS_DOWN", message="user stream down",
                                        context={"symbol": "BTCUSDT"}), idempotency_key=idem, account_id="acc1")

    for i in range(3):
        raise_(f"a{i}")
    raise_("a2")  # a redelivery-like duplicate of the same message: not counted again
    key = "WS_DOWN:acc1:BTCUSDT"
    wait_until(lambda: (store.get(ALERTS, key) or {}).get("count") == 3, 10, message="3 occurrences")
    assert store.get(ALERTS, key)["state"] == "OPEN" and store.get(ALERTS, key)["level"] == "WARN"
    assert not [e for e in _outbox(r) if e.payload.data.get("alert_key") == key]  # WARN is not routed

    acked = alert_svc.acknowledge(store, key, by="alice", now_ms=1)
    assert acked["state"] == "ACKED" and acked["acked_by"] == "alice"
    raise_("a3", "CRITICAL")  # escalation: stored as FATAL, notified
    wait_until(lambda: store.get(ALERTS, key)["count"] == 4, 10, message="4th occurrence")
    doc = store.get(ALERTS, key)
    assert doc["level"] == "FATAL" and doc["state"] == "ACKED"
    wait_until(lambda: [e for e in _outbox(r) if e.payload.event_id == "alert:a3"], 10, message="FATAL Notify")

    assert alert_svc.resolve(store, key, by="bob", now_ms=2)["state"] == "RESOLVED"
    raise_("a4", "ERROR")
    wait_until(lambda: store.get(ALERTS, key)["state"] == "OPEN", 10, message="reopened")
    assert store.get(ALERTS, key)["count"] == 1 and store.get(ALERTS, key)["reopened"] == 1
    wait_until(lambda: [e for e in _outbox(r) if e.payload.event_id == "alert:a4"], 10, message="reopen Notify")
    assert [d["key"] for d in alert_svc.list_alerts(store, state="open")] == [key]
    with pytest.raises(alert_svc.AlertNotFound):
        alert_svc.acknowledge(store, "nope", by="x", now_ms=3)


def test_metrics_downsampled_per_minute(r, stack):
    store = stack
    prod = Producer(r, WallClock())
    base = 1_751_760_000_000  # a minute boundary
    for i, v in enumerate([120.0, 80.0, 300.0]):
        prod.publish(keys.metrics_stream("s1.ws_rtt"), MetricEvent(name="s1.ws_rtt", value=v, labels={"account": "a"},
                                                                    ts=base + i * 1000), idempotency_key=f"m{i}")
    prod.publish(keys.metrics_stream("s1.ws_rtt"), MetricEvent(name="s1.ws_rtt", value=300.0, labels={"account": "a"},
                                                                ts=base + 2000), idempotency_key="m2")  # duplicate
    prod.publish(keys.metrics_stream("s1.ws_rtt"), MetricEvent(name="s1.ws_rtt", value=5.0, labels={"account": "a"},
                                                                ts=base + 61_000), idempotency_key="m3")
    key = bucket_key("s1.ws_rtt", {"account": "a"}, base)
    doc = wait_until(lambda: (store.get(METRICS_TIMESERIES, key) or {}).get("count") == 3
                     and store.get(METRICS_TIMESERIES, key), 10, message="bucket of 3")
    assert (doc["sum"], doc["min"], doc["max"], doc["last"]) == (500.0, 80.0, 300.0, 300.0)
    nxt = wait_until(lambda: store.get(METRICS_TIMESERIES, bucket_key("s1.ws_rtt", {"account": "a"}, base + 60_000)),
                     10, message="next minute's bucket")
    assert nxt["count"] == 1 and nxt["last"] == 5.0


def test_daily_strategy_metrics_from_store_facts(r, settings):
    store = open_store(settings.store_url)
    activate(store, "health-test", 1, BUNDLE)
    now = WallClock().now_ms()
    day = now - now % 86_400_000
    store.upsert("order_intents", "i1", {"signal_id": "s1"})
    store.upsert("signals", "s1", {"bundle_id": "vb"})
    store.upsert("positions", "p1", {"symbol": "BTCUSDT", "state": "CLOSED", "realized_pnl": "12.5",
                                     "entry_intent_id": "i1", "updated_at": now})
    store.upsert("positions", "p2", {"symbol": "BTCUSDT", "state": "CLOSED", "realized_pnl": "-4",
                                     "entry_intent_id": "i1", "updated_at": now})
    store.upsert("positions", "p3", {"symbol": "BTCUSDT", "state": "CLOSED", "realized_pnl": "100",
                                     "entry_intent_id": "i1", "updated_at": day - 1})  # yesterday
    store.upsert("positions", "p4", {"symbol": "BTCUSDT", "state": "CLOSED", "realized_pnl": "50",
                                     "entry_intent_id": "i1", "closed_at": day - 5, "updated_at": now})  # closed yesterday
    store.upsert("positions", "p5", {"symbol": "BTCUSDT", "state": "ACTIVE", "realized_pnl": "7",
                                     "entry_intent_id": "i1", "updated_at": now})  # still open: not a trade yet
    for k, maker, fee, slip in (("f1", True, "0.1", 2.0), ("f2", False, "0.3", 6.0)):
        store.upsert("fills", k, {"symbol": "BTCUSDT", "intent_id": "i1", "is_maker": maker, "fee": fee,
                                  "fee_asset": "USDT", "slippage_bps": slip, "ts": now})
    store.upsert("funding_records", "a:1", {"symbol": "BTCUSDT", "funding_time": now, "amount_usdt": "-0.25"})
    with running_s11(r, settings, store, "s11-daily"):
        doc = wait_until(lambda: store.get(STRATEGY_METRICS_DAILY, f"vb:BTCUSDT:{day}"), 15, message="daily doc")
        funding = wait_until(lambda: store.get(STRATEGY_METRICS_DAILY, f"all:BTCUSDT:{day}"), 5, message="funding")
    assert Decimal(doc["pnl_usdt"]) == Decimal("8.5") and doc["trades"] == 2 and doc["hit_rate"] == 0.5
    assert doc["fills"] == 2 and doc["maker_fill_ratio"] == 0.5 and doc["slippage_bps_avg"] == 4.0
    assert Decimal(doc["fees_usdt"]) == Decimal("0.4") and Decimal(doc["net_pnl_usdt"]) == Decimal("8.1")
    assert Decimal(funding["funding_usdt"]) == Decimal("-0.25")


def test_grading_table_worst_signal_wins_and_bad_thresholds_are_named():
    from chimera.errors import PermanentError
    from chimera.handlers.health.grading import grade, thresholds

    table = thresholds({"router_p95_ms": {"yellow": 300, "red": 900}})
    v = grade({"router_p95_ms": 450.0, "stream_lag": 2000.0, "maker_fill_ratio": None}, table)
    assert v.level == "ORANGE" and set(v.reasons) == {"router_p95_ms", "stream_lag"}
    assert grade({"router_p95_ms": 950.0}, table).level == "RED"
    assert grade({"reconcile_inconsistent": 1.0}, table).level == "ORANGE"
    assert grade({"model_auc": 0.6, "model_brier": 0.2}, table).level == "GREEN"
    with pytest.raises(PermanentError, match="health.thresholds.latency"):
        thresholds({"latency": {"red": 1}})
    with pytest.raises(PermanentError, match="router_p95_ms.red"):
        thresholds({"router_p95_ms": {"red": "slow"}})


def test_b9_the_grade_s11_writes_changes_s3s_entries(r, stack):
    """B9 on the S3 side: the grade S11 writes is what S3's guard reads. RED blocks entries, ORANGE
    halves the size (the sample bundle's strategy.health.size_mult), GREEN trades at full size."""
    import json
    from pathlib import Path

    from chimera.handlers.strategy import bundle, guards

    raw = json.loads((Path(bundle.__file__).parents[2] / "bundles" / "sample_vol_breakout.json").read_text())
    cfg = bundle.parse(raw["strategy"], raw["bundle_id"], 1)
    port = RedisState(r)
    r.hset(keys.ROUTER_COUNTERS, mapping={"maker_sent_count": 40, "maker_filled_count": 6})  # ratio 0.15: RED
    wait_until(lambda: port.health() == "RED", 15, message="RED")
    assert guards.health(cfg, port.health()) == ("HEALTH_RED", 0.0, "RED")
    r.hset(keys.ROUTER_COUNTERS, mapping={"maker_sent_count": 40, "maker_filled_count": 14})  # 0.35: ORANGE
    wait_until(lambda: port.health() == "ORANGE", 15, message="ORANGE")
    assert guards.health(cfg, port.health()) == (None, 0.5, "ORANGE")
    r.hset(keys.ROUTER_COUNTERS, mapping={"maker_sent_count": 40, "maker_filled_count": 36})
    wait_until(lambda: port.health() == "GREEN", 15, message="GREEN")
    assert guards.health(cfg, port.health()) == (None, 1.0, "GREEN")


def test_b10_monthly_cost_curve_drafted_from_taker_fills(r, stack):
    """B10: the month's taker fills -> slip_bps = b0 + b1*spread_bp + b2*size_to_depth, filed as a DRAFT."""
    from chimera.handlers.health.costfit import TIMER, month_start
    from chimera.schemas.messages import TimerFired

    store = stack
    start = 1_751_328_000_000  # 2025-07-01
    due = month_start(start, 1)
    for i in range(40):
        spread_ticks, qty = 1 + i % 5, Decimal("0.01") * (1 + i % 7)
        bid, ask = Decimal("100000"), Decimal("100000") + Decimal("10") * spread_ticks
        mid = (bid + ask) / 2
        asks = [[str(ask), "0.5"], [str(ask + 10), "0.5"], [str(ask + 20), "1"]]
        depth = sum(Decimal(p) * Decimal(q) for p, q in asks)
        spread_bp = float((ask - bid) / mid * 10_000)
        size = float(qty * ask / depth)
        noise = ((i * 7919) % 11 - 5) / 100  # deterministic, mean ~0
        store.upsert("fills", f"t{i}", {"symbol": "BTCUSDT", "side": "BUY", "intent_id": "x", "is_maker": False,
                                        "qty": str(qty), "price": str(ask), "mid_at_send": str(mid),
                                        "top3_at_send": {"bids": [[str(bid), "1"]], "asks": asks},
                                        "slippage_bps": 1.0 + 0.5 * spread_bp + 20.0 * size + noise,
                                        "ts": start + i * 60_000})
    store.upsert("fills", "maker", {"symbol": "BTCUSDT", "side": "BUY", "is_maker": True, "slippage_bps": 99.0,
                                    "qty": "1", "price": "1", "ts": start + 1})
    store.upsert("fills", "nobook", {"symbol": "BTCUSDT", "side": "BUY", "is_maker": False, "slippage_bps": 99.0,
                                     "qty": "1", "price": "1", "ts": start + 2})
    Producer(r, WallClock()).publish(keys.HEALTH_TIMERS, TimerFired(name=TIMER, due_ms=due), idempotency_key="cf1")
    doc = wait_until(lambda: store.get("experiments", f"costfit:{start}"), 15, message="cost curve draft")
    assert doc["kind"] == "COST_CURVE" and doc["status"] == "DRAFT" and doc["n"] == 40 and doc["to_ms"] == due
    assert doc["b0"] == pytest.approx(1.0, abs=0.1)
    assert doc["b1_spread_bp"] == pytest.approx(0.5, abs=0.02)
    assert doc["b2_size_to_depth"] == pytest.approx(20.0, abs=1.0)
    assert doc["r2"] > 0.99
