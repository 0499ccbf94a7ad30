"""S7 on real data: the sample backtest's signals labelled by the real role on the in-process runtime,
checked against an independent computation from the venue's own trades, commissions, realized PnL and
funding income (traded signals) and from the kline file read with pandas (counterfactual signals)."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest

from chimera.backtest.results import round_trips
from chimera.handlers.labels.role import SPEC, request_backfill
from chimera.ports.venues import Venues
from chimera.ports.wiring import memory_ports
from chimera.schemas.documents.research import LABEL_COLLECTIONS
from chimera.schemas.messages import BackfillLabels, TimerFired
from chimera.store.collections import SIGNALS, STRATEGY_EVENTS
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.inprocess import InProcessRuntime
from tests.integration.research_support import frames, kline_source, sample_run

HOUR = 3_600_000
TOL = Decimal("1e-8")


@pytest.fixture(scope="module")
def run():
    return sample_run()


def s7_runtime(store, now_ms: int) -> InProcessRuntime:
    clock = ManualClock(now_ms)
    ports = memory_ports(clock, None, venues=Venues(klines=kline_source))
    return InProcessRuntime([SPEC], store=store, clock=clock, ports=ports, follow_event_time=False)


def backfill(rt: InProcessRuntime, h: int, rid: str) -> None:
    stream, msg, key = request_backfill(h, rid, "test")
    rt.publish(stream, msg, key)
    rt.run()


def expected_traded(out, sig: dict, h: int) -> Decimal | None:
    """From the venue: the round trip of the signal's position (venue trades, realized PnL, commissions,
    funding income), when it closed within the horizon."""
    pos_id = sig["decision"]["pos_id"]
    trips = [t for t in round_trips(out) if t.pos_id == pos_id]
    if not trips:
        return None
    (t,) = trips
    assert t.status == "CLOSED" and t.exit_time <= sig["t0"] + h * HOUR, "sample trades close within hours"
    return (t.realized_pnl - t.fees + t.funding) / (t.entry_price * t.qty)


def expected_counterfactual(sig: dict, h: int, side: str, bundle: dict) -> float:
    df = frames()[sig["symbol"]]
    i = int(df.index[df.open_time == sig["open_time"]][0])
    entry = float(df.close[i])
    sizing = bundle["strategy"]["sizing"]
    d = sig["decision"]
    atr = float(sig["features"]["atr"])
    sgn = 1 if side == "BUY" else -1
    stop = entry - sgn * sizing["sl_atr"] * float(d.get("sl_mult", 1.0)) * atr
    tp = entry + sgn * sizing["tp_atr"] * float(d.get("tp_mult", 1.0)) * atr
    win = df[(df.open_time >= sig["t0"]) & (df.open_time < sig["t0"] + h * HOUR)]
    exit_ = float(win.close.iloc[-1])
    for lo, hi in zip(win.low, win.high, strict=True):
        if (lo <= stop) if sgn > 0 else (hi >= stop):
            exit_ = stop
            break
        if (hi >= tp) if sgn > 0 else (lo <= tp):
            exit_ = tp
            break
    return (sgn * (exit_ - entry) - 0.0005 * (entry + exit_)) / entry


def test_backfill_labels_equal_the_venue_and_the_market_data(run):
    out, bundle = run
    store = out.store
    signals = store.query(SIGNALS, {})
    last_t0 = max(s["t0"] for s in signals)
    # 12 hours after the day's first signals only: later ones are not due yet.
    early = min(s["t0"] for s in signals) + 12 * HOUR + 6 * HOUR
    rt = s7_runtime(store, early)
    backfill(rt, 12, "r1")
    labels = {d["signal_id"]: d for d in store.query(LABEL_COLLECTIONS[12], {})}
    due = [s for s in signals if s["t0"] + 12 * HOUR <= early]
    assert set(labels) == {s["signal_id"] for s in due} and 0 < len(due) < len(signals)
    assert not rt.dead

    rt.clock.set(last_t0 + 36 * HOUR)
    for h in (12, 24):
        backfill(rt, h, f"r2-{h}")
    assert not rt.dead, rt.dead
    traded = cf = 0
    for h in (12, 24):
        labels = {d["signal_id"]: d for d in store.query(LABEL_COLLECTIONS[h], {})}
        assert set(labels) == {s["signal_id"] for s in signals}
        for s in signals:
            lab = labels[s["signal_id"]]
            want = expected_traded(out, s, h) if s["decision"]["action"] == "open" else None
            if want is not None:
                traded += 1
                assert lab["kind"] == "TRADED"
                assert abs(Decimal(lab["roi_net"]) - want) <= TOL, (s["signal_id"], lab["roi_net"], want)
            elif s["features"].get("atr") is None:
                assert lab["kind"] == "UNDEFINED" and lab["roi_net"] is None and lab["label_class"] == "NONE"
                continue
            else:
                cf += 1
                side = s["decision"].get("side") or "BUY"  # the sample bundle is long-only
                assert lab["kind"] == "COUNTERFACTUAL" and lab["side"] == side
                assert abs(float(lab["roi_net"]) - expected_counterfactual(s, h, side, bundle)) <= 1e-8
            roi = Decimal(lab["roi_net"])
            assert lab["label"] == (1 if roi > 0 else -1 if roi < 0 else 0)
    assert traded >= 10 and cf > 1000
    # strategy_events: one LABEL_WRITE per label; labels:{ready} announced them.
    events = store.query(STRATEGY_EVENTS, {"kind": "LABEL_WRITE"})
    assert len(events) == 2 * len(signals)
    ready = rt.entries(keys.LABELS_READY)
    assert sum(e.payload.count for e in ready if e.payload.h == 24) == len(signals)
    assert {sid for e in ready if e.payload.h == 12 for sid in e.payload.signal_ids} == {s["signal_id"] for s in signals}


def test_replay_rewrites_the_same_labels_and_a_bad_horizon_is_refused(run):
    out, _ = run
    store = out.store
    signals = store.query(SIGNALS, {})
    rt = s7_runtime(store, max(s["t0"] for s in signals) + 36 * HOUR)
    backfill(rt, 36, "a")
    before = json.dumps(store.query(LABEL_COLLECTIONS[36], {}, order_by="signal_id"), sort_keys=True)
    n_events = store.count(STRATEGY_EVENTS, {"kind": "LABEL_WRITE"})
    for d in store.query(LABEL_COLLECTIONS[36], {}):  # forget them: the backfill must write the same bytes
        store.delete(LABEL_COLLECTIONS[36], d["_key"])
    backfill(s7_runtime(store, max(s["t0"] for s in signals) + 36 * HOUR), 36, "b")
    assert json.dumps(store.query(LABEL_COLLECTIONS[36], {}, order_by="signal_id"), sort_keys=True) == before
    assert store.count(STRATEGY_EVENTS, {"kind": "LABEL_WRITE"}) == n_events  # append-only, never twice
    with pytest.raises(msgspec.ValidationError, match=r"\$\.h"):  # the envelope refuses it (dead letter on Redis)
        rt.publish(keys.LABELS_COMMANDS, BackfillLabels(h=48), "bad")  # type: ignore[arg-type]
    rt.publish(keys.LABELS_COMMANDS, TimerFired(name="s7.backfill", data={"h": "48"}), "bad-timer")
    rt.run()
    assert rt.dead and "h must be one of (12, 24, 36)" in rt.dead[-1][2]
    with pytest.raises(Exception, match="h must be one of"):
        request_backfill(7, "x")


def test_the_backfill_timer_labels_and_re_arms_itself(run):
    out, _ = run
    store = out.store
    now = max(s["t0"] for s in store.query(SIGNALS, {})) + 30 * HOUR
    rt = s7_runtime(store, now)
    ctx = rt._context(SPEC, 0)
    armed = SPEC.on_start(ctx)
    assert sorted(e.timer_key for e in armed) == ["s7.backfill:12", "s7.backfill:24", "s7.backfill:36"]
    assert all(e.due_ms == now for e in armed)
    rt.publish(keys.LABELS_COMMANDS, TimerFired(name="s7.backfill", due_ms=now, data={"h": "24"}), "t24")
    rt.run()
    assert not rt.dead, rt.dead
    assert store.count(LABEL_COLLECTIONS[24]) == store.count(SIGNALS)
    assert rt.armed_timers() == {"s7.backfill:24": now + HOUR}
    assert rt.ports.marks.get("h24") == now - 24 * HOUR
