"""S9 as a role on the in-process runtime: a family of momentum hypotheses on the shipped BTC bars
(read through the klines port), walk-forward, verdicts written once."""

from __future__ import annotations

import pytest

from chimera.handlers.experiments.role import SPEC, request_run
from chimera.ports.venues import Venues
from chimera.ports.wiring import memory_ports
from chimera.schemas.messages import OpsEvent, RunExperiment
from chimera.store import open_store
from chimera.store.collections import EXPERIMENTS, HYPOTHESES
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.inprocess import InProcessRuntime
from tests.integration.research_support import kline_source

START, END = 1751760000000, 1752364800000  # 2025-07-06 .. 2025-07-13 UTC


@pytest.fixture
def rt():
    store = open_store("sqlite://:memory:")
    clock = ManualClock(END + 3_600_000)
    ports = memory_ports(clock, None, venues=Venues(klines=kline_source))
    return InProcessRuntime([SPEC], store=store, clock=clock, ports=ports, follow_event_time=False)


def test_run_writes_experiment_verdicts_and_ops_event_once(rt):
    for k in (2, 4, 8):
        rt.store.upsert(HYPOTHESES, f"mom{k}", {"hypothesis_id": f"mom{k}", "family": "mom", "kind": "momentum",
                                                "grid": {"lookback": [k, 2 * k]}, "cost": 0.0005,
                                                "metric": "sharpe", "direction": "greater", "status": "PENDING"})
    msg = RunExperiment(experiment_id="e1", family="mom", symbol="BTCUSDT", start_ms=START, end_ms=END)
    rt.publish(*request_run(msg))
    rt.run()
    assert not rt.dead, rt.dead
    exp = rt.store.get(EXPERIMENTS, "e1")
    assert exp["status"] == "DONE" and len(exp["folds"]) >= 3 and exp["trials"] == 3 * 2 * len(exp["folds"])
    for r in exp["results"]:
        h = rt.store.get(HYPOTHESES, r["hypothesis_id"])
        assert h["status"] == r["verdict"] in ("CONFIRMED", "REJECTED") and h["experiment_id"] == "e1"
        assert r["reasons"] and len(r["fold_kpis"]) == len(exp["folds"])
        for f in exp["folds"]:
            assert f["train_end"] == f["test_start"] - 12 * 3_600_000  # purged by the horizon
    (ev,) = [e for e in rt.entries(keys.OPS_EVENTS) if isinstance(e.payload, OpsEvent)]
    assert ev.payload.kind == "EXPERIMENT_DONE" and ev.payload.detail["trials"] == str(exp["trials"])
    assert rt.ports.bt_marks.get("bt:mom") == END + 3_600_000  # bt:{last_run_ts} on Redis
    # A repeated command re-announces the stored result and changes nothing.
    rt.publish(keys.EXP_COMMANDS, msg, "again")
    rt.run()
    assert rt.store.get(EXPERIMENTS, "e1") == exp
    # A family without PENDING hypotheses is a dead letter naming it.
    rt.publish(keys.EXP_COMMANDS, RunExperiment(experiment_id="e2", family="none", symbol="BTCUSDT",
                                                start_ms=START, end_ms=END), "e2")
    rt.run()
    assert rt.dead and "family 'none' has no PENDING hypotheses" in rt.dead[-1][2]


def _hyps(store, family="mom"):
    for k in (2, 4, 8):
        store.upsert(HYPOTHESES, f"{family}{k}", {"hypothesis_id": f"{family}{k}", "family": family, "kind": "momentum",
                                                  "grid": {"lookback": [k, 2 * k]}, "cost": 0.0005, "status": "PENDING"})


def _stats(exp):
    return [(r["hypothesis_id"], r["verdict"], r["q"], r["spa_p"], r["dsr"], r["chosen"]) for r in exp["results"]]


def test_distributed_trials_give_the_same_verdicts_as_one_worker(rt):
    _hyps(rt.store, "one")
    rt.publish(*request_run(RunExperiment(experiment_id="e1", family="one", symbol="BTCUSDT", start_ms=START,
                                          end_ms=END)))
    _hyps(rt.store, "many")
    rt.publish(*request_run(RunExperiment(experiment_id="e2", family="many", symbol="BTCUSDT", start_ms=START,
                                          end_ms=END, distribute=True)))
    rt.run()
    assert not rt.dead, rt.dead
    one, many = rt.store.get(EXPERIMENTS, "e1"), rt.store.get(EXPERIMENTS, "e2")
    assert len(rt.entries(keys.EXP_TRIALS)) == 3 + 1  # three trials, one finalize
    assert many["status"] == "DONE" and many["distributed"] is True
    assert [(h.replace("one", "many"), *rest) for h, *rest in _stats(one)] == _stats(many)


def test_s9_replicas_on_redis_share_the_trials(r, settings):
    from chimera.streams.producer import Producer
    from chimera.workers.clock import WallClock
    from tests.support.polling import wait_until
    from tests.support.workers import ThreadWorker

    store = open_store(settings.store_url)
    _hyps(store, "redis")
    workers = [ThreadWorker(SPEC, r, settings, f"s9-{i}", store=store) for i in range(2)]
    for w in workers:
        w.worker.ports = __import__("dataclasses").replace(w.worker.ports, venues=Venues(klines=kline_source))
    with workers[0], workers[1]:
        Producer(r, WallClock()).publish(*request_run(RunExperiment(
            experiment_id="er", family="redis", symbol="BTCUSDT", start_ms=START, end_ms=END, distribute=True))[:2],
            idempotency_key="exp:er")
        exp = wait_until(lambda: (d := store.get(EXPERIMENTS, "er")) and d.get("status") == "DONE" and d, 120,
                         message="distributed experiment done on Redis")
    ref = open_store("sqlite://:memory:")
    _hyps(ref, "redis")
    clock = ManualClock(END)
    rt2 = InProcessRuntime([SPEC], store=ref, clock=clock, follow_event_time=False,
                           ports=memory_ports(clock, None, venues=Venues(klines=kline_source)))
    rt2.publish(*request_run(RunExperiment(experiment_id="er", family="redis", symbol="BTCUSDT", start_ms=START,
                                           end_ms=END)))
    rt2.run()
    assert _stats(exp) == _stats(ref.get(EXPERIMENTS, "er"))
    assert r.hget(keys.BT_LAST_RUN, "bt:redis") is not None
    assert {store.get(HYPOTHESES, f"redis{k}")["status"] for k in (2, 4, 8)} <= {"CONFIRMED", "REJECTED"}
