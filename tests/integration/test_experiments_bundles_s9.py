"""The s9 worker runs bundle hypotheses (``kind: bundle``) through the in-process backtest, on real Redis
(standalone and the 6-node cluster): ``RunExperiment`` on ``exp:{commands}`` -> ``experiments/<id>``, the
hypotheses' verdicts, ``EXPERIMENT_DONE`` on ``ops:events`` and ``bt:{last_run_ts}``; the figures are the
ones ``chimera experiments run``'s path gives for the same bundle, values, data and windows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from chimera.backtest.data import parse_time
from chimera.handlers.experiments import bundles
from chimera.handlers.experiments.role import SPEC, request_run
from chimera.schemas.envelope import decode
from chimera.schemas.messages import OpsEvent, RunExperiment
from chimera.store import open_store
from chimera.store.collections import EXPERIMENTS, HYPOTHESES
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import ManualClock, WallClock
from chimera.workers.inprocess import InProcessRuntime
from tests.support.polling import wait_until
from tests.support.positions import drained
from tests.support.workers import ThreadWorker

REPO = Path(__file__).resolve().parents[2]
BODY = json.loads((REPO / "chimera" / "bundles" / "sample_vol_breakout.json").read_text())
BTC = str(REPO / "chimera" / "venues" / "local" / "data" / "BTC_USDT_USDT-1m-futures.feather")
START, END = parse_time("2025-07-06", "--from"), parse_time("2025-07-08", "--to")
KEY, VALUES = "strategy.entry.long_when", ["rv_15 > rv_60 and atr_pct > 0.0005"]


def hypothesis(store, hid: str, family: str, body: dict = BODY) -> None:
    store.upsert(HYPOTHESES, hid, {"hypothesis_id": hid, "family": family, "kind": "bundle", "bundle": body,
                                   "grid": {KEY: VALUES}, "data": [BTC], "metric": "sharpe", "direction": "greater",
                                   "status": "PENDING"})


def command(eid: str, family: str) -> RunExperiment:
    return RunExperiment(experiment_id=eid, family=family, symbol="BTCUSDT", start_ms=START, end_ms=END, horizon_h=12,
                         train_days=1, test_days=1, period_min=15)


@pytest.fixture(scope="module")
def reference() -> dict:
    return bundles.run_variants(bundles.Base.of(BODY), [bundles.Vary(KEY, tuple(VALUES))], [BTC], str(START), str(END),
                                windows=bundles.Windows(train_h=24, test_h=24, horizon_h=12, period_min=15),
                                family="f", experiment_id="x", hypothesis_ids=["h"])


def stats(doc: dict) -> list:
    return [(r["verdict"], r["q"], r["spa_p"], r["dsr"], r["chosen"], r["kpis"]) for r in doc["results"]]


def test_an_s9_worker_on_redis_runs_bundle_hypotheses(r, settings, reference):
    store = open_store(settings.store_url)
    hypothesis(store, "bh1", "bfam")
    with ThreadWorker(SPEC, r, settings, "s9-a", store=store):
        Producer(r, WallClock()).publish(*request_run(command("eb1", "bfam"))[:2], idempotency_key="exp:eb1")
        exp = wait_until(lambda: (d := store.get(EXPERIMENTS, "eb1")) and d.get("status") == "DONE" and d, 300,
                         message="bundle experiment done on Redis")
        events = wait_until(lambda: [e for e in (decode(f).payload for _, f in r.xrange(keys.OPS_EVENTS))
                                     if isinstance(e, OpsEvent) and e.kind == "EXPERIMENT_DONE"], 30,
                            message="EXPERIMENT_DONE")
    assert stats(exp) == stats(reference) and exp["kind"] == "bundle" and len(exp["folds"]) == 1
    assert [v["backtest_kpis"] for v in exp["variants"]] == [v["backtest_kpis"] for v in reference["variants"]]
    assert exp["folds"][0]["test_start"] - exp["folds"][0]["train_end"] == 12 * 3_600_000
    h = store.get(HYPOTHESES, "bh1")
    assert h["status"] == exp["results"][0]["verdict"] and h["experiment_id"] == "eb1"
    assert events[0].detail["experiment_id"] == "eb1" and events[0].detail["trials"] == str(exp["trials"]) == "1"
    assert r.hget(keys.BT_LAST_RUN, "bt:bfam") is not None


def test_a_family_on_two_base_bundles_is_a_dead_letter_naming_it():
    store = open_store("sqlite://:memory:")
    hypothesis(store, "m1", "mixed")
    hypothesis(store, "m2", "mixed", body={**BODY, "rev": 2})
    rt = InProcessRuntime([SPEC], store=store, clock=ManualClock(END), follow_event_time=False)
    rt.publish(*request_run(command("em", "mixed")))
    rt.run()
    assert rt.dead and "needs the same 'bundle' and 'data'" in rt.dead[-1][2]
    assert store.get(EXPERIMENTS, "em") is None and store.get(HYPOTHESES, "m1")["status"] == "PENDING"


def test_two_s9_replicas_share_a_distributed_bundle_family(r, settings, reference):
    from chimera.store.collections import EXPERIMENT_TRIALS

    store = open_store(settings.store_url)
    hypothesis(store, "dh1", "dfam")
    # A trial is a backtest (seconds on a loaded machine): with the suite's 300 ms claim_idle_ms the other
    # replica would reclaim it mid-run, and a replica still running a reclaimed copy when the streams show
    # drained cannot stop. Production sizes claim_idle_ms above a trial (docs/experiments.md).
    settings = dataclasses.replace(settings, claim_idle_ms=600_000)
    workers = [ThreadWorker(SPEC, r, settings, f"s9-{i}", store=store) for i in range(2)]
    with workers[0], workers[1]:
        msg = RunExperiment(**{**{f: getattr(command("ed1", "dfam"), f) for f in RunExperiment.__struct_fields__},
                               "distribute": True})
        Producer(r, WallClock()).publish(*request_run(msg)[:2], idempotency_key="exp:ed1")
        exp = wait_until(lambda: (d := store.get(EXPERIMENTS, "ed1")) and d.get("status") == "DONE" and d, 300,
                         message="distributed bundle experiment done on Redis")
        wait_until(lambda: all(drained(r, s, keys.group("s9")) for s in (keys.EXP_COMMANDS, keys.EXP_TRIALS)), 300,
                   message="s9 streams drained")
    trials = store.query(EXPERIMENT_TRIALS, {"experiment_id": "ed1"})
    assert sorted(t["hypothesis_id"] for t in trials) == sorted(v["variant"] for v in reference["variants"])
    assert exp["distributed"] is True and stats(exp) == stats(reference)
    assert [v["backtest_kpis"] for v in exp["variants"]] == [v["backtest_kpis"] for v in reference["variants"]]
    assert store.get(HYPOTHESES, "dh1")["status"] == exp["results"][0]["verdict"]
