"""S10 promote on real Redis (single server and the 6-node cluster) with real workers in threads: the
staged rollout SHADOW → CANARY → RAMP_10/50/100 → PROMOTED hot-reloads every worker within 1 s and no
decision or order mixes two revs; a failing analysis rolls back within one analysis interval; NaN
(a figure without samples) pauses and never promotes.

S3 runs for real (two replicas); what S4 would write for S3's entries (intent, leg, fill) is written
by the test's ``Fleet`` thread from S3's own decisions, with an outcome per stage the test chooses.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack, contextmanager
from decimal import Decimal

import pytest

from chimera.handlers.config import service
from chimera.handlers.config.role import SPEC as S10
from chimera.handlers.strategy.role import SPEC as S3
from chimera.schemas.envelope import decode
from chimera.schemas.messages import FeaturesComputed, PromoteBundle, PromotionCommand
from chimera.store import open_store
from chimera.store.collections import (
    CONFIG_ACTIVE,
    FILLS,
    ORDER_INTENTS,
    ORDERS,
    PROMOTIONS,
    SHADOW_DECISIONS,
    SIGNALS,
)
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from chimera.workers.scheduler_role import run_scheduler
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

INTERVAL_MS = 800
LIMITS = {"fut_margin_budget_usdt": "100000000", "max_per_symbol": 1000000, "max_open_positions": 1000000}


def _body(bundle_id: str, margin: str, rules: list, governance: dict | None = None) -> dict:
    b = {"bundle_id": bundle_id, "strategy": {
        "symbols": ["BTCUSDT"], "entry": {"long_when": "atr_pct > 0.001"}, "rules": rules, "risk": LIMITS,
        "sizing": {"market": "FUT", "leverage": 20, "margin_usdt": margin, "exec_policy": "MARKET"}}}
    if governance:
        b["governance"] = governance
    return b


INCUMBENT = _body("inc", "20", [], {"require_simulation": False, "max_slippage_bps": 5.0,
                                    "rollout": {"analysis_interval_ms": INTERVAL_MS, "canary_size_pct": 50}})
CANDIDATE = _body("cand", "100", [{"id": "wide_tp", "when": "atr_pct > 0.003", "then": {"tp_mult": 1.2}}])


class Fleet:
    """Feeds S2's features every 60 ms and writes S4's documents for each entry S3 opened."""

    def __init__(self, r, store, outcome) -> None:
        self.prod = Producer(r, WallClock())
        self.store = store
        self.outcome = outcome  # (bundle_id, rev) -> ("FILLED" | "REJECTED" | None, slippage_bps | None)
        self.stop = threading.Event()
        self.done: set[str] = set()
        self.n = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            now = int(time.time() * 1000)
            sid = f"BTCUSDT:{now}:{self.n}"
            self.n += 1
            atr_pct = 0.002 + 0.002 * (self.n % 2)
            self.prod.publish(keys.feat_stream("BTCUSDT"), FeaturesComputed(
                signal_id=sid, t0=now, symbol="BTCUSDT",
                features={"mid": 60000.0, "atr": 60000.0 * atr_pct, "atr_pct": atr_pct}), idempotency_key=sid)
            for doc in self.store.query(SIGNALS, {"t0": (">=", now - 5000)}):
                d = doc.get("decision") or {}
                if d.get("action") != "open" or doc["_key"] in self.done:
                    continue
                self.done.add(doc["_key"])
                status, slip = self.outcome((d["bundle_id"], d["config_rev"]))
                if status is None:  # S4 never got to it: no order document at all
                    continue
                iid = d["intent_id"]
                self.store.upsert(ORDER_INTENTS, iid, {"intent_id": iid, "signal_id": doc["_key"], "created_at": now})
                self.store.upsert(ORDERS, f"{iid}:entry", {"intent_id": iid, "leg": "entry", "purpose": "ENTRY",
                                                          "type": "MARKET", "status": status, "created_at": now})
                if status == "FILLED":
                    self.store.upsert(FILLS, f"{iid}:t1", {"intent_id": iid, "trade_id": "t1", "slippage_bps": slip,
                                                          "ts": now})
            self.stop.wait(0.06)


class ReloadWatch:
    """Records every switch of config_active and every worker's own switches, both stamped by one sampler.

    A worker reloads from config_active when cfg:events announces a rev, so a worker still loading rev N
    when rev N+1 is activated goes straight to N+1 (config_active is the truth). What the rollout
    promises is therefore per switch: every worker runs that rev *or a later one* within 1 s of it.
    Waiting for all workers to sit on rev N at once (the earlier watcher) lost the switch whenever one
    worker's reload took longer than a stage interval (CI run 19), and measured nothing for it.
    """

    def __init__(self, store, workers) -> None:
        self.store, self.workers = store, workers
        self.actives: list[tuple[tuple[str, int], float]] = []  # (pair, first seen active)
        self.runs: list[list[tuple[tuple[str, int], float]]] = [[] for _ in workers]  # per worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            a = self.store.get(CONFIG_ACTIVE, "active")
            now = time.monotonic()
            pair = (a["bundle_id"], int(a["rev"]))
            if not self.actives or self.actives[-1][0] != pair:
                self.actives.append((pair, now))
            for w, log in zip(self.workers, self.runs, strict=True):
                cur = (w.config.current.bundle_id, w.config.current.rev)
                if not log or log[-1][0] != cur:
                    log.append((cur, now))
            time.sleep(0.005)

    def _index(self, pair: tuple[str, int], ts: float) -> int:
        """Which activation a worker's run of ``pair`` since ``ts`` belongs to: the latest one of that pair
        up to then (a rollback activates a pair again). The sampler reads config_active before the
        workers, so a worker can show a switch one sample before config_active does: 50 ms of slack."""
        return max((i for i, (p, t) in enumerate(self.actives) if p == pair and t <= ts + 0.05), default=-1)

    @property
    def lags(self) -> list[tuple[str, float]]:
        """Per switch: the time until the slowest worker ran that rev or a later one (inf: not yet)."""
        out = []
        for i, (pair, t) in enumerate(list(self.actives)):
            slowest = 0.0
            for log in self.runs:
                reached = [ts for p, ts in list(log) if self._index(p, ts) >= i]
                slowest = max(slowest, max(reached[0] - t, 0.0) if reached else float("inf"))
            out.append((f"{pair[0]}:{pair[1]}", slowest))
        return out

    def settled(self) -> bool:
        """Every worker runs the latest switch or a later one."""
        lags = self.lags
        return bool(lags) and lags[-1][1] != float("inf")


@contextmanager
def stack(r, settings, outcome):
    store = open_store(settings.store_url)
    inc = service.create(store, INCUMBENT, now_ms=int(time.time() * 1000), by="alice")
    service.switch_active(store, inc.bundle_id, inc.rev)
    cand = service.create(store, CANDIDATE, now_ms=int(time.time() * 1000), by="alice")
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(r, WallClock(), "sched-s10", stop), daemon=True)
    sched.start()
    fleet = Fleet(r, store, outcome)
    with ExitStack() as es:
        # Stopped however the test ends: a scheduler left running would hold the singleton lease and
        # fire the next test's timers on this test's clock (CI run 11: two later cluster tests stalled).
        es.callback(sched.join, 5)
        es.callback(stop.set)
        workers = [es.enter_context(ThreadWorker(S10, r, settings, "s10-a", store=store)),
                   es.enter_context(ThreadWorker(S3, r, settings, "s3-a")),
                   es.enter_context(ThreadWorker(S3, r, settings, "s3-b"))]
        watch = ReloadWatch(store, workers)
        watch.thread.start()
        fleet.thread.start()
        try:
            yield store, cand, watch
        finally:
            fleet.stop.set()
            watch.stop.set()
            fleet.thread.join(5)
            watch.thread.join(5)


def _promote(r, pid: str, cand) -> None:
    Producer(r, WallClock()).publish(keys.CFG_COMMANDS, PromoteBundle(
        promotion_id=pid, bundle_id=cand.bundle_id, rev=cand.rev, requested_by="alice", approved_by="bob"),
        idempotency_key=pid)


def _state(store, pid: str) -> str | None:
    return (store.get(PROMOTIONS, pid) or {}).get("state")


def _verdicts(doc: dict) -> list[dict]:
    """The steps that moved the rollout (a stage short of orders is EXTENDED by an interval, state kept)."""
    return [s for s in doc["steps"] if s["event"] != "EXTENDED"]


def _steps(store, pid: str) -> list[tuple[str, str, str]]:
    return [(s["from_state"], s["event"], s["to_state"]) for s in _verdicts(store.get(PROMOTIONS, pid))]


def _no_mixed_revs(r, store) -> int:
    """Every decision, its sig:events envelope and its order carry one (bundle, rev), and its size is that rev's."""
    bodies = {}
    checked = 0
    for _id, fields in r.xrange(keys.SIG_EVENTS):
        env = decode(fields)
        doc = store.get(SIGNALS, env.payload.signal_id)
        d = doc["decision"]
        assert env.config_rev == d["config_rev"] == doc["config_rev"], (env, d)
        key = (d["bundle_id"], d["config_rev"])
        if key not in bodies:
            bodies[key] = service.get_bundle(store, *key)["body"]
        if d["action"] == "open":
            # qty is floored to BTCUSDT's 0.001 step: at 60000 and 20x that is at most 3 USDT of margin below
            # the rev's margin_usdt (20, 10, 50, 100 are told apart).
            cfg = Decimal(bodies[key]["strategy"]["sizing"]["margin_usdt"])
            assert cfg - 3 <= Decimal(d["margin_usdt"]) <= cfg, (key, d)
            checked += 1
    for _id, fields in r.xrange(keys.ORD_COMMANDS):
        env = decode(fields)
        d = store.get(SIGNALS, env.payload.intent.signal_id)["decision"]
        assert env.config_rev == d["config_rev"] and env.payload.intent.intent_id == d["intent_id"]
    return checked


def test_rollout_promotes_hot_reloads_every_worker_within_1s(r, settings):
    with stack(r, settings, lambda key: ("FILLED", 1.5)) as (store, cand, watch):
        wait_until(lambda: store.count(SIGNALS) >= 3, 10, message="S3 deciding")
        _promote(r, "pr-ok", cand)
        wait_until(lambda: _state(store, "pr-ok") == "PROMOTED", 30, interval=0.05, message="PROMOTED")
        wait_until(watch.settled, 5, message="every worker on the promoted rev")
        time.sleep(0.3)  # decisions in flight at the switch land too
    doc = store.get(PROMOTIONS, "pr-ok")
    assert _steps(store, "pr-ok") == [
        ("PENDING", "GUARDS_PASSED", "SHADOW"), ("SHADOW", "Successful", "CANARY"),
        ("CANARY", "Successful", "RAMP_10"), ("RAMP_10", "Successful", "RAMP_50"),
        ("RAMP_50", "Successful", "RAMP_100"), ("RAMP_100", "Successful", "PROMOTED")]
    actives = [s["active"] for s in _verdicts(doc)]
    assert actives == ["inc:1", "cand:2", "cand:3", "cand:4", "cand:1", "cand:1"]
    margins = [service.get_bundle(store, "cand", rev)["body"]["strategy"]["sizing"]["margin_usdt"] for rev in (2, 3, 4, 1)]
    assert margins == ["50", "10", "50", "100"]  # canary 50 %, ramp 10 %, 50 %, the candidate itself
    live = _verdicts(doc)[2]["metrics"]
    assert live["orders"] >= 1 and live["reject_rate"] == 0.0 and live["slippage_bps"] == 1.5
    assert service.active(store) == {"bundle_id": "cand", "rev": 1}
    assert service.get_bundle(store, "cand", 1)["status"] == "ACTIVE"
    assert service.get_bundle(store, "inc", 1)["status"] == "RETIRED"
    # Every switch reached all three workers (s10 and both S3 replicas) within 1 s.
    switched = [p for p, _lag in watch.lags]
    assert switched[:1] == ["inc:1"] and {"cand:2", "cand:3", "cand:4", "cand:1"} <= set(switched)
    assert max(lag for _p, lag in watch.lags) < 1.0, watch.lags
    shadow = store.query(SHADOW_DECISIONS, {"promotion_id": "pr-ok"})
    assert shadow and all(s["executed"] is False and s["candidate"]["bundle_id"].startswith("cand") for s in shadow)
    assert _no_mixed_revs(r, store) >= 5


def test_failing_analysis_rolls_back_within_one_interval(r, settings):
    def outcome(key):  # the candidate's orders are rejected by the venue
        return ("REJECTED", None) if key[0] == "cand" else ("FILLED", 1.0)

    with stack(r, settings, outcome) as (store, cand, watch):
        wait_until(lambda: store.count(SIGNALS) >= 3, 10, message="S3 deciding")
        _promote(r, "pr-bad", cand)
        wait_until(lambda: _state(store, "pr-bad") == "ROLLED_BACK", 20, interval=0.05, message="ROLLED_BACK")
        wait_until(lambda: watch.settled() and watch.lags[-1][0] == "inc:1", 5, message="workers back on inc:1")
    doc = store.get(PROMOTIONS, "pr-bad")
    assert _steps(store, "pr-bad") == [("PENDING", "GUARDS_PASSED", "SHADOW"), ("SHADOW", "Successful", "CANARY"),
                                       ("CANARY", "Failed", "ROLLED_BACK")]
    failed = _verdicts(doc)[2]
    assert failed["metrics"]["reject_rate"] == 1.0 and "reject_rate 1.000 > 0.2" in failed["reasons"][0]
    assert failed["active"] == "inc:1" and service.active(store) == {"bundle_id": "inc", "rev": 1}
    # One analysis interval after the canary went live, or after the last interval it was extended by for
    # want of orders (plus the scheduler's and the worker's latency).
    before = doc["steps"][-2]
    assert before["to_state"] == "CANARY" and all(s["event"] == "EXTENDED" for s in doc["steps"][2:-1])
    assert INTERVAL_MS <= failed["at_ms"] - before["at_ms"] < INTERVAL_MS + 1000
    assert max(lag for _p, lag in watch.lags) < 1.0, watch.lags
    assert service.get_bundle(store, "cand", 1)["status"] == "REJECTED"
    _no_mixed_revs(r, store)


def test_a_stage_short_of_orders_runs_more_intervals_then_pauses(r, settings):
    # The candidate's decisions never become orders: no verdict is possible. The canary is extended by
    # governance.max_extensions (3) intervals, each recorded, and only then paused as Inconclusive.
    with stack(r, settings, lambda key: (None, None) if key[0] == "cand" else ("FILLED", 1.0)) as (store, cand, _w):
        wait_until(lambda: store.count(SIGNALS) >= 3, 10, message="S3 deciding")
        _promote(r, "pr-quiet", cand)
        wait_until(lambda: _state(store, "pr-quiet") == "PAUSED", 20, interval=0.05, message="PAUSED")
    doc = store.get(PROMOTIONS, "pr-quiet")
    events = [(s["from_state"], s["event"], s["to_state"]) for s in doc["steps"]]
    assert events == [("PENDING", "GUARDS_PASSED", "SHADOW"), ("SHADOW", "Successful", "CANARY"),
                      *[("CANARY", "EXTENDED", "CANARY")] * 3, ("CANARY", "Inconclusive", "PAUSED")]
    ext = doc["steps"][2:5]
    assert [s["reasons"][-1] for s in ext] == [f"extension {i} of 3" for i in (1, 2, 3)]
    assert all("< min_orders 1" in s["reasons"][0] and s["metrics"]["orders"] == 0 for s in ext)
    gaps = [b["at_ms"] - a["at_ms"] for a, b in zip(doc["steps"][1:], doc["steps"][2:], strict=False)]
    assert all(g >= INTERVAL_MS for g in gaps), gaps  # one interval each, never sooner
    assert doc["paused_state"] == "CANARY" and service.active(store) == {"bundle_id": "cand", "rev": 2}


def test_nan_pauses_and_never_promotes(r, settings):
    # Orders fill but no fill carries a slippage: the slippage figure is NaN -> Inconclusive.
    with stack(r, settings, lambda key: ("FILLED", None)) as (store, cand, _watch):
        wait_until(lambda: store.count(SIGNALS) >= 3, 10, message="S3 deciding")
        _promote(r, "pr-nan", cand)
        wait_until(lambda: _state(store, "pr-nan") == "PAUSED", 20, interval=0.05, message="PAUSED")
        steps = _steps(store, "pr-nan")
        assert steps[-1] == ("CANARY", "Inconclusive", "PAUSED")
        assert "slippage_bps is missing or NaN" in store.get(PROMOTIONS, "pr-nan")["steps"][-1]["reasons"]
        assert store.get(PROMOTIONS, "pr-nan")["steps"][-1]["metrics"]["slippage_bps"] is None
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < 3 * INTERVAL_MS / 1000:  # three intervals: nothing moves by itself
            assert _state(store, "pr-nan") == "PAUSED" and len(_steps(store, "pr-nan")) == len(steps)
            time.sleep(0.05)
        assert service.active(store) == {"bundle_id": "cand", "rev": 2}  # paused on the canary, not promoted
        Producer(r, WallClock()).publish(keys.CFG_COMMANDS, PromotionCommand(
            promotion_id="pr-nan", action="ABORT", by="bob"), idempotency_key="pr-nan:abort")
        wait_until(lambda: _state(store, "pr-nan") == "ROLLED_BACK", 10, message="aborted")
        assert service.active(store) == {"bundle_id": "inc", "rev": 1}


def test_guardrails_refuse_without_simulation_and_same_person(r, settings):
    store = open_store(settings.store_url)
    strict = {**INCUMBENT, "governance": {"rollout": {"analysis_interval_ms": INTERVAL_MS}}}
    inc = service.create(store, strict, now_ms=int(time.time() * 1000))
    service.switch_active(store, inc.bundle_id, inc.rev)
    cand = service.create(store, CANDIDATE, now_ms=int(time.time() * 1000))
    with ThreadWorker(S10, r, settings, "s10-g", store=store):
        Producer(r, WallClock()).publish(keys.CFG_COMMANDS, PromoteBundle(
            promotion_id="pr-g", bundle_id=cand.bundle_id, rev=cand.rev, requested_by="alice", approved_by="alice"),
            idempotency_key="pr-g")
        wait_until(lambda: _state(store, "pr-g") == "REJECTED", 10, message="REJECTED")
    reasons = store.get(PROMOTIONS, "pr-g")["steps"][0]["reasons"]
    assert any("no simulation stored" in x for x in reasons)
    assert any("approver must be another person" in x for x in reasons)
    assert service.active(store) == {"bundle_id": "inc", "rev": 1}


pytestmark = pytest.mark.timeout(120)
