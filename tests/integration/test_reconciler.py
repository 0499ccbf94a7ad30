"""S5 reconciler on real Redis (standalone + cluster), the SQLite store and the local venue.

The reconciler and the router run as consumer-group workers; the venue is driven through the
official SDK clients. Assertions about closing read the *venue's* position, not Chimera's records.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from chimera.handlers.reconciler.core import is_chimera_cid, jaccard
from chimera.handlers.reconciler.role import SPEC as S5
from chimera.handlers.router.legs import new_leg_doc
from chimera.handlers.router.role import SPEC as S4
from chimera.schemas.envelope import decode
from chimera.schemas.messages import Reconcile
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import FuturesTrading, client_order_id
from chimera.venues.local.replay import DataSpec
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from chimera.workers.clock import WallClock
from tests.integration.test_runtime import ThreadWorker
from tests.support.polling import wait_until

WS_2023 = "/work/shared/data/market/ws_streams_depth_trades_bookticker/usdm/btcusdt_20230404.dat.gz"


@pytest.fixture
def venue(tmp_path):
    v = start_venue(VenueConfig(data=[DataSpec("ws", WS_2023, "futures", "BTCUSDT")],
                                state_file=str(tmp_path / "venue.json"), orders_per_10s=10_000,
                                orders_per_minute=100_000))
    v.advance(events=3000)
    yield v
    v.stop()


@pytest.fixture
def env(settings, venue):
    s = dataclasses.replace(settings, venue="paper", venue_url=venue.base_url)
    return s, open_store(s.store_url)


def fut(venue) -> FuturesTrading:
    key, secret = venue.keys["main"]
    return FuturesTrading(venue.base_url, key, secret)


def reconcile(r, store, run_id: str, scope: str = "ALL") -> dict:
    Producer(r, WallClock()).publish(keys.RECON_COMMANDS, Reconcile(scope=scope, requested_by="test"),
                                     idempotency_key=run_id)
    return wait_until(lambda: store.get("strategy_events", f"RECONCILE_RUN:{run_id}"), timeout=20,
                      message=f"reconcile run {run_id}")


def venue_position(venue, symbol="BTCUSDT") -> Decimal:
    return sum((Decimal(str(p.get("positionAmt") or 0)) for p in fut(venue).position_risk(symbol)), Decimal(0))


def stream(r, name):
    return [decode(f) for _, f in r.xrange(name)]


def test_pure_helpers():
    assert jaccard(set(), set()) == 1.0 and jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert is_chimera_cid(client_order_id("abc", "mkt")) and not is_chimera_cid("manual-1")


def test_stale_store_order_and_position_are_closed(r, env, venue):
    s, store = env
    intent = {"intent_id": "stale-1", "market": "FUT", "symbol": "BTCUSDT", "side": "BUY", "qty": "0.010",
              "purpose": "ENTRY"}
    doc = new_leg_doc(intent, "mk", order_type="LIMIT", side="BUY", qty=Decimal("0.010"), now_ms=1,
                      price=Decimal("20000"), tif="GTX")
    store.upsert("orders", "stale-1:mk", {**doc, "status": "ACCEPTED", "venue_order_id": "999"})
    store.upsert("positions", "ghost-1", {"symbol": "BTCUSDT", "side": "SELL", "qty": "0.020", "state": "ACTIVE"})
    with ThreadWorker(S5, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-stale")
    order = store.get("orders", "stale-1:mk")
    assert order["status"] == "CANCELED" and order["reconcile"] == "CLOSED_NOT_AT_VENUE"
    pos = store.get("positions", "ghost-1")
    assert pos["state"] == "CLOSED" and pos["qty"] == "0"
    assert {c["ref"] for c in rep["closed"]} == {doc["client_order_id"], "ghost-1"}
    assert rep["consistency"]["orders"] == 0.0 and rep["consistency"]["positions"] == 0.0
    assert store.get("strategy_events", f"RECONCILE_ORDER_CLOSED:run-stale:{doc['client_order_id']}")
    assert store.get("strategy_events", "RECONCILE_POSITION_CLOSED:run-stale:ghost-1")
    assert int(r.get(keys.RECON_LAST_RUN)) > 0
    assert [e.payload.kind for e in stream(r, keys.OPS_EVENTS)] == ["RECONCILE_DONE"]
    # A second run finds store and venue consistent (nothing open on either side).
    with ThreadWorker(S5, r, s, "s5-a", store):
        again = reconcile(r, store, "run-stale-2")
    assert again["consistency"]["all"] == 1.0 and not again["closed"] and not again["fixed"]


def test_unknown_venue_position_is_closed_with_an_error_alert(r, env, venue):
    s, store = env
    fut(venue).new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=Decimal("0.010"), client_id="manual-1")
    assert venue_position(venue) == Decimal("0.010")
    with ThreadWorker(S5, r, s, "s5-a", store), ThreadWorker(S4, r, s, "s4-a", store):
        rep = reconcile(r, store, "run-unknown")
        wait_until(lambda: venue_position(venue) == 0, timeout=20, message="venue position closed by S4")
    [closed] = rep["closed"]
    assert closed["action"] == "CLOSE_UNKNOWN" and closed["qty"] == "0.010"
    alerts = [e.payload for e in stream(r, keys.ALERTS)]
    assert [(a.level, a.code) for a in alerts] == [("ERROR", "RECONCILE_UNKNOWN_POSITION")]
    cmds = [e.payload.intent for e in stream(r, keys.ORD_COMMANDS) if e.type == "submit_order"]
    assert len(cmds) == 1 and cmds[0].reduce_only and cmds[0].exec_policy == "MARKET" and cmds[0].side == "SELL"
    assert store.get("strategy_events", "RECONCILE_UNKNOWN_POSITION:run-unknown:BTCUSDT:BUY")


def test_leftover_fill_is_adopted_and_protected_and_qty_fixed(r, env, venue):
    """Crash between the entry fill and S6: the venue position is ours (a filled Chimera leg)."""
    s, store = env
    cid = client_order_id("crash-1", "mkt")
    vo = fut(venue).new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=Decimal("0.010"), client_id=cid)
    intent = {"intent_id": "crash-1", "market": "FUT", "symbol": "BTCUSDT", "side": "BUY", "qty": "0.010",
              "purpose": "ENTRY"}
    doc = new_leg_doc(intent, "mkt", order_type="MARKET", side="BUY", qty=Decimal("0.010"), now_ms=1)
    store.upsert("orders", "crash-1:mkt", {**doc, "status": "FILLED", "filled_qty": "0.010",
                                           "venue_order_id": vo.venue_order_id})
    with ThreadWorker(S5, r, s, "s5-a", store), ThreadWorker(S4, r, s, "s4-a", store):
        rep = reconcile(r, store, "run-adopt")
        algo = wait_until(lambda: fut(venue).open_algo_orders("BTCUSDT"), timeout=20, message="adopted stop")
    assert [a["ref"] for a in rep["adopted"]] == ["crash-1"]
    pos = store.get("positions", "crash-1")
    assert pos["state"] == "ACTIVE" and pos["qty"] == "0.010" and pos["adopted_by"] == "reconciler"
    assert algo[0].reduce_only and algo[0].side == "SELL" and algo[0].qty == Decimal("0.010")
    assert not stream(r, keys.ALERTS)
    # The store drifts (a missed partial close): the venue's quantity wins.
    store.update_if("positions", "crash-1", {"qty": "0.004"}, {"state": "ACTIVE"})
    with ThreadWorker(S5, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-fix", scope="POSITIONS")
    assert rep["fixed"] == [{"type": "position", "ref": "crash-1", "field": "qty", "was": "0.004", "now": "0.010"}]
    assert store.get("positions", "crash-1")["qty"] == "0.010"
