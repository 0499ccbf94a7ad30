"""``POST /v1/simulate`` the streaming way (real Redis single + the 6-node cluster, SQLite): the gateway
validates and publishes ``SimulateBundle`` on ``cfg:{commands}`` (202 QUEUED), the real S10 worker
runs it, ``GET /v1/simulations/{id}`` answers QUEUED, then DONE with the KPI table candidate vs active.

Truths checked beside the service's own figures: the command on the stream, the window (both sides
replay the same bars), each side's trade count against what ``chimera backtest`` of that bundle
alone stores in ``backtest_trades``, the execution trace the worker left, and a simulation that
cannot run (a window without data) ends FAILED with the reason while the worker goes on.
"""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from chimera.backtest import service as bt
from chimera.backtest.data import parse_time
from chimera.handlers.config import service
from chimera.handlers.config.role import SPEC as S10
from chimera.schemas.envelope import decode
from chimera.store import open_objects
from chimera.store.collections import BACKTEST_TRADES, CONFIG_BUNDLES
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from tests.integration.test_gateway_reads import WINDOW, bundle
from tests.support.gateway import bearer, gateway_app
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

CAND, INC = bundle("cand", 0.0008), bundle("inc", 0.001)  # both trade in the window (8 and 5 round trips)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Each bundle backtested on its own (``chimera backtest``), shared by both Redis modes."""
    d = tmp_path_factory.mktemp("sim")
    out = {}
    for name, body in (("cand", CAND), ("inc", INC)):
        (d / f"{name}.json").write_text(json.dumps(body))
        out[name] = bt.backtest(str(d / f"{name}.json"), ["sample"], *WINDOW)
    return out


@pytest.fixture
def gw(r, settings):
    app, store = gateway_app(settings, r)
    with TestClient(app) as c:
        c.store = store
        c.tokens = {role: bearer(c, role) for role in ("viewer", "risk")}
        c.headers.update(c.tokens["risk"])
        yield c


def commands(r) -> list:
    """The SimulateBundle commands on S10's stream (its own timers aside)."""
    envs = [decode(f, eid.decode(), keys.CFG_COMMANDS) for eid, f in r.xrange(keys.CFG_COMMANDS)]
    return [e for e in envs if e.type == "simulate_bundle"]


def poll(gw, sid: str, until: set[str], timeout: float) -> dict:
    seen = {}

    def done():
        resp = gw.get(f"/v1/simulations/{sid}")
        assert resp.status_code == 200, resp.text
        seen["doc"] = resp.json()
        return seen["doc"]["status"] in until

    wait_until(done, timeout=timeout, interval=0.5, message=f"simulation {sid} reaches {until}")
    return seen["doc"]


@pytest.mark.timeout(900)
def test_simulate_queued_then_s10_runs_it_side_by_side(gw, r, settings, alone):
    store = gw.store
    inc = service.create(store, INC, now_ms=0)
    service.switch_active(store, inc.bundle_id, inc.rev)

    # Inline candidate: S10 creates it (lint + dry-run) and simulates it against the active bundle.
    resp = gw.post("/v1/simulate", json={"bundle": CAND, "data": ["sample"], "from": WINDOW[0], "to": WINDOW[1],
                                         "eps": 0.1, "simulation_id": "sim-gw-1"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["simulation_id"] == "sim-gw-1" and resp.json()["status"] == "QUEUED"
    [cmd] = commands(r)
    assert cmd.type == "simulate_bundle" and cmd.idempotency_key == "sim-gw-1"
    assert (cmd.payload.bundle, list(cmd.payload.data), cmd.payload.from_text, cmd.payload.to_text,
            cmd.payload.eps, cmd.payload.requested_by) == (CAND, ["sample"], *WINDOW, 0.1, "risk")
    queued = gw.get("/v1/simulations/sim-gw-1")  # no worker yet: accepted, not started
    assert queued.status_code == 200 and queued.json()["status"] == "QUEUED", queued.text

    # A window without data passes the gateway's checks (the file exists) and fails in S10: FAILED, kept.
    bad = gw.post("/v1/simulate", json={"bundle_id": "inc", "rev": 1, "from": "2030-01-01", "to": "2030-01-02"})
    assert bad.status_code == 202, bad.text
    bad_id = bad.json()["simulation_id"]

    with ThreadWorker(S10, r, settings, "s10-sim"):
        doc = poll(gw, "sim-gw-1", {"DONE", "FAILED"}, timeout=600)
        failed = poll(gw, bad_id, {"DONE", "FAILED"}, timeout=120)
        # The same command delivered again under another key (past the runtime's done-marker): S10 finds
        # the simulation DONE and neither runs it again nor creates the inline bundle a second time.
        Producer(r, WallClock()).publish(keys.CFG_COMMANDS, cmd.payload, idempotency_key="sim-gw-1:again")
        wait_until(lambda: gw.get("/v1/ops/traces/sim-gw-1:again").status_code == 200, timeout=60,
                   interval=0.2, message="the repeated command handled")
    assert gw.get("/v1/simulations/sim-gw-1").json() == doc
    assert len(store.query(CONFIG_BUNDLES, {"bundle_id": "cand"})) == 1
    assert doc["status"] == "DONE", doc.get("error")
    assert failed["status"] == "FAILED" and "no bars" in failed["error"], failed

    # The candidate was stored by S10 from the inline body, once.
    [created] = store.query(CONFIG_BUNDLES, {"bundle_id": "cand"})
    assert created["sha256"] == service.sha256(CAND) and created["source"] == "simulate"
    assert (doc["bundle_id"], doc["rev"], doc["active"]) == ("cand", created["rev"], "inc:1")
    assert (doc["from"], doc["to"], doc["data_spec"]) == (*WINDOW, ["sample"])

    table = {row["kpi"]: row for row in doc["kpis"]}
    # Same window on both sides: the same bars, from the same first bar to the same end.
    lo, hi = parse_time(WINDOW[0], "from"), parse_time(WINDOW[1], "to")
    assert table["bars"]["candidate"] == table["bars"]["active"] == 2 * (hi - lo) // 60_000
    assert table["start_ms"]["candidate"] == table["start_ms"]["active"]
    assert lo <= table["start_ms"]["candidate"] < table["end_ms"]["candidate"] <= hi + 60_000
    assert table["end_ms"]["candidate"] == table["end_ms"]["active"]
    # Each side's trades = what the backtest of that bundle alone stores in backtest_trades.
    objects = open_objects(settings.objects_url)
    for side, name in (("candidate", "cand"), ("active", "inc")):
        bt.save(alone[name], store, objects)
        stored = store.query(BACKTEST_TRADES, {"run_id": alone[name].run["run_id"]})
        assert table["trades"][side] == len(stored) > 0, (side, table["trades"])
        assert table["net_pnl_usdt"][side] == alone[name].run["kpis"]["net_pnl_usdt"]
    assert table["trades"]["candidate"] != table["trades"]["active"]  # two different bundles, told apart
    sens = doc["sensitivity"]
    assert sens["eps"] == 0.1 and sens["signals"] > 0 and doc["robustness"] == sens["robustness"]

    # The worker's execution trace of the command, under the simulation id.
    wait_until(lambda: gw.get("/v1/ops/traces/sim-gw-1").status_code == 200, timeout=30, interval=0.2,
               message="the worker's trace flushed")
    tr = gw.get("/v1/ops/traces/sim-gw-1", headers=gw.tokens["viewer"])
    steps = [(s["group"], s["phase"]) for s in tr.json()["items"]]
    assert steps == [(keys.group("s10"), "START"), (keys.group("s10"), "DONE")]
    assert tr.json()["items"][0]["type"] == "simulate_bundle"
    assert gw.get("/v1/ops/traces/never-sent").status_code == 404

    # Re-sending the same id queues nothing and answers where it stands.
    again = gw.post("/v1/simulate", json={"bundle": CAND, "simulation_id": "sim-gw-1"})
    assert again.status_code == 202 and again.json()["status"] == "DONE", again.text
    assert len(commands(r)) == 3  # the two POSTs and the test's own repeat


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_simulate_refuses_bad_input_naming_the_field(gw, r):
    store = gw.store
    service.create(store, INC, now_ms=0)
    cases = [
        ({}, 422, "bundle_id"),
        ({"bundle_id": "inc"}, 422, "rev"),
        ({"bundle_id": "nope", "rev": 1}, 404, "bundle_id"),
        ({"bundle_id": "inc", "rev": 1, "bundle": INC}, 422, "bundle"),
        ({"bundle": {"bundle_id": "x", "strategy": {"entry": {"long_when": "atr_pct >>> 1"}}}}, 422, "bundle"),
        ({"bundle_id": "inc", "rev": 1, "from": "yesterday"}, 400, "from"),
        ({"bundle_id": "inc", "rev": 1, "from": "2025-07-08", "to": "2025-07-07"}, 422, "to"),
        ({"bundle_id": "inc", "rev": 1, "data": ["BTCUSDT-1m-2031-01.zip"]}, 422, "data[0]"),
        ({"bundle_id": "inc", "rev": 1, "data": ["sample", "what-is-this.txt"]}, 422, "data[1]"),
        ({"bundle_id": "inc", "rev": 1, "data": []}, 400, "data"),
        ({"bundle_id": "inc", "rev": 1, "eps": 1.5}, 400, "eps"),
        ({"bundle_id": "inc", "rev": 1, "window": "1d"}, 400, None),
    ]
    for body, status, field in cases:
        resp = gw.post("/v1/simulate", json=body)
        assert resp.status_code == status, (body, resp.text)
        if field is not None:
            assert resp.json().get("field") == field, (body, resp.text)
    lint = gw.post("/v1/simulate", json=cases[4][0]).json()
    assert lint["error"] == "BUNDLE_REJECTED" and lint["errors"], lint
    assert gw.post("/v1/simulate", json={"bundle_id": "inc", "rev": 1},
                   headers=gw.tokens["viewer"]).status_code == 403
    assert commands(r) == []  # nothing refused reached S10
    assert gw.get("/v1/simulations/simreq-unknown").status_code == 404
