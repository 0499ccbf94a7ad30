"""S5 reconciler on real Redis (standalone + cluster), the SQLite store and the local venue.

The reconciler and the router run as consumer-group workers; the venue is driven through the
official SDK clients. Assertions about closing read the *venue's* position, not Chimera's records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from binance_common.errors import BadRequestError

import chimera
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.reconciler.core import is_chimera_cid, jaccard
from chimera.handlers.reconciler.role import SPEC as S5
from chimera.handlers.router.role import SPEC as S4
from chimera.handlers.router.toolkit import new_leg_doc
from chimera.handlers.strategy.role import SPEC as S3
from chimera.schemas.envelope import decode
from chimera.schemas.messages import Decide, Reconcile
from chimera.schemas.strategy import decode_kill_switch
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import client_order_id
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.handler import HandlerSpec
from chimera.workers.scheduler_role import run_scheduler
from tests.support.futures_venue import btc_futures_venue, fut
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

# The explicit-run tests reconcile on demand only; start-up and periodic runs have their own tests.
S5_ON_DEMAND = HandlerSpec(role=S5.role, streams=S5.streams, routes=S5.routes)  # no start-up run, no timer

@pytest.fixture
def venue(tmp_path):
    with btc_futures_venue(tmp_path) as v:
        yield v


@pytest.fixture
def env(settings, venue):
    s = dataclasses.replace(settings, venue="paper", venue_url=venue.base_url)
    return s, open_store(s.store_url)


def reconcile(r, store, run_id: str, scope: str = "ALL") -> dict:
    Producer(r, WallClock()).publish(keys.RECON_COMMANDS, Reconcile(scope=scope, requested_by="test"),
                                     idempotency_key=run_id)
    return wait_until(lambda: store.get("strategy_events", f"RECONCILE_RUN:{run_id}"), timeout=20,
                      message=f"reconcile run {run_id}")


def venue_position(venue, symbol="BTCUSDT") -> Decimal:
    return sum((Decimal(str(p.get("positionAmt") or 0)) for p in fut(venue).position_risk(symbol)), Decimal(0))


def venue_orders(venue, prefix: str) -> Counter:
    """Client ids of every order the venue's engine holds (open or done), counted."""
    orders = venue.call(lambda: list(venue.server.engine.orders.values()))
    return Counter(o.client_id for o in orders if o.client_id.startswith(prefix))


def minute_ago() -> int:
    return int(time.time() * 1000) - 60_000


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
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-stale")
    order = store.get("orders", "stale-1:mk")
    assert order["status"] == "CANCELED" and order["reconcile"] == "CLOSED_NOT_AT_VENUE"
    pos = store.get("positions", "ghost-1")
    assert pos["state"] == "CLOSED" and pos["qty"] == "0"
    assert {c["ref"] for c in rep["closed"]} == {doc["client_order_id"], "ghost-1"}
    assert rep["consistency"]["orders"] == 0.0 and rep["consistency"]["positions"] == 0.0
    assert store.get("strategy_events", f"RECONCILE_ORDER_CLOSED:run-stale:{doc['client_order_id']}")
    assert store.get("strategy_events", "RECONCILE_POSITION_CLOSED:run-stale:ghost-1")
    assert rep["finished_at"] > 0
    assert [e.payload.kind for e in stream(r, keys.OPS_EVENTS)] == ["KILL_SWITCH_SET", "RECONCILE_DONE"]
    # The inconsistent run degraded trading to REDUCE_ONLY, with a TTL.
    # (main's own switch: an inconsistent account degrades itself only; the global switch stays off)
    ks = decode_kill_switch(r.get(keys.kill_switch_account("main")))
    assert (ks.mode, ks.set_by, ks.reason.split(":")[0]) == ("REDUCE_ONLY", "s5-reconciler", "RECONCILE_INCONSISTENT")
    assert 170_000 < r.pttl(keys.kill_switch_account("main")) <= 180_000  # 3 x the default 60 s period
    assert r.get(keys.KILL_SWITCH) is None
    # A second run finds store and venue consistent (nothing open on either side) and lifts it.
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        again = reconcile(r, store, "run-stale-2")
    assert again["consistency"]["all"] == 1.0 and not again["closed"] and not again["fixed"]
    assert again["consistent"] and r.get(keys.kill_switch_account("main")) is None
    assert [e.payload.kind for e in stream(r, keys.OPS_EVENTS)][-2:] == ["KILL_SWITCH_CLEARED", "RECONCILE_DONE"]


def test_unknown_venue_position_is_closed_with_an_error_alert(r, env, venue):
    s, store = env
    fut(venue).new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=Decimal("0.010"), client_id="manual-1")
    assert venue_position(venue) == Decimal("0.010")
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store), ThreadWorker(S4, r, s, "s4-a", store):
        rep = reconcile(r, store, "run-unknown")
        wait_until(lambda: venue_position(venue) == 0, timeout=20, message="venue position closed by S4")
    [closed] = rep["closed"]
    assert closed["action"] == "CLOSE_UNKNOWN" and closed["qty"] == "0.010"
    alerts = [e.payload for e in stream(r, keys.ALERTS)]
    assert [(a.level, a.code) for a in alerts] == [("ERROR", "RECONCILE_UNKNOWN_POSITION"),
                                                   ("WARN", "RECONCILE_DEGRADED")]
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
    # Filled a minute ago: settled (not in flight), inside the reconciler's look-back window.
    doc = new_leg_doc(intent, "mkt", order_type="MARKET", side="BUY", qty=Decimal("0.010"), now_ms=minute_ago())
    store.upsert("orders", "crash-1:mkt", {**doc, "status": "FILLED", "filled_qty": "0.010",
                                           "venue_order_id": vo.venue_order_id})
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store), ThreadWorker(S4, r, s, "s4-a", store):
        rep = reconcile(r, store, "run-adopt")
        algo = wait_until(lambda: fut(venue).open_algo_orders("BTCUSDT"), timeout=20, message="adopted stop")
    assert [a["ref"] for a in rep["adopted"]] == ["crash-1"]
    pos = store.get("positions", "crash-1")
    assert pos["state"] == "ACTIVE" and pos["qty"] == "0.010" and pos["adopted_by"] == "reconciler"
    assert algo[0].reduce_only and algo[0].side == "SELL" and algo[0].qty == Decimal("0.010")
    assert algo[0].client_order_id == client_order_id("crash-1:sl1", "sl")  # S6's own stop intent
    assert [a.payload.level for a in stream(r, keys.ALERTS)] == ["WARN"]  # degraded, no error
    # The store drifts (a missed partial close): the venue's quantity wins.
    store.update_if("positions", "crash-1", {"qty": "0.004"}, {"state": "ACTIVE"})
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-fix", scope="POSITIONS")
    assert rep["fixed"] == [{"type": "position", "ref": "crash-1", "field": "qty", "was": "0.004", "now": "0.010"}]
    assert store.get("positions", "crash-1")["qty"] == "0.010"


# --- start-up and periodic runs, degrade to REDUCE_ONLY, crash adoption within one cycle -----------

DRILL_BUNDLE = Path(chimera.__file__).parent / "bundles" / "drill_high_limits.json"


def use_bundle(store, **reconciler) -> dict:
    bundle = json.loads(DRILL_BUNDLE.read_text())
    bundle["reconciler"] = {**bundle["reconciler"], **reconciler}
    activate(store, bundle["bundle_id"], 1, bundle)
    return bundle


@contextlib.contextmanager
def scheduler_thread(r):
    stop = threading.Event()
    t = threading.Thread(target=run_scheduler, args=(r, WallClock(), "sched-test", stop), daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def drained(r, stream_name: str, role: str) -> bool:
    """The role's group has read everything on the stream and acked it."""
    group = next((g for g in r.xinfo_groups(stream_name) if g["name"] == keys.group(role).encode()), None)
    return group is not None and group["pending"] == 0 and group["lag"] == 0


def runs(store) -> list[dict]:
    return store.query("strategy_events", {"kind": "RECONCILE_RUN"}, order_by="finished_at")


def test_reconciles_at_start_then_every_interval_with_one_pending_timer(r, env, venue):
    s, store = env
    use_bundle(store, interval_ms=400, settle_ms=0)
    with scheduler_thread(r), ThreadWorker(S5, r, s, "s5-a", store):
        wait_until(lambda: len(runs(store)) >= 4, timeout=20, message="start-up run + 3 periodic runs")
        # The next run is armed in the flush after the run (poll: a run may be between its start and its flush).
        wait_until(lambda: r.zcard(keys.SCHED_DUE) == 1 and r.zscore(keys.SCHED_DUE, keys.recon_periodic_timer("main")),
                   timeout=5, message="exactly one periodic timer armed")
    kinds = [run["summary"]["requested_by"] for run in runs(store)]
    assert kinds[0] == "startup" and set(kinds[1:]) == {"periodic"}
    # One chain: each periodic run arms the next one interval after it starts, so the due times (in the
    # run ids, recon:periodic:<account>:<due>) are never closer than the interval. Two chains would be.
    # (When runs finish depends on the machine's load: a slow run finishing just before a quick one.)
    dues = [int(run["run_id"].rsplit(":", 1)[1]) for run in runs(store)[1:]]
    gaps = [b - a for a, b in itertools.pairwise(sorted(dues))]
    assert all(gap >= 400 for gap in gaps), gaps
    assert all(run["consistent"] for run in runs(store)) and r.get(keys.KILL_SWITCH) is None
    # A restart kicks a new start-up run but keeps the single pending periodic timer.
    with scheduler_thread(r), ThreadWorker(S5, r, s, "s5-b", store):
        wait_until(lambda: [x["summary"]["requested_by"] for x in runs(store)].count("startup") == 2, timeout=20,
                   message="second start-up run")
        wait_until(lambda: r.zcard(keys.SCHED_DUE) == 1, timeout=5, message="still one periodic timer")


def test_an_operator_kill_switch_is_never_overridden_nor_lifted(r, env, venue):
    s, store = env
    use_bundle(store, interval_ms=0, settle_ms=0)
    store.upsert("positions", "ghost-2", {"symbol": "BTCUSDT", "side": "SELL", "qty": "0.020", "state": "ACTIVE"})
    r.set(keys.KILL_SWITCH, b'{"mode":"HALT_NEW","set_by":"ops-alice","reason":"maintenance"}', px=600_000)
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        bad = reconcile(r, store, "run-op-1")
        good = reconcile(r, store, "run-op-2")
    assert not bad["consistent"] and good["consistent"]
    ks = decode_kill_switch(r.get(keys.KILL_SWITCH))
    assert (ks.mode, ks.set_by) == ("HALT_NEW", "ops-alice") and r.pttl(keys.KILL_SWITCH) > 590_000
    assert r.get(keys.kill_switch_account("main")) is None
    assert not [e for e in stream(r, keys.OPS_EVENTS) if e.payload.kind.startswith("KILL_SWITCH")]


def test_crash_in_pending_entry_is_adopted_within_one_cycle(r, env, venue):
    """The entry filled at the venue, but its OrderResult was lost (never seen by S6 nor S3)."""
    s, store = env
    interval = 1000
    use_bundle(store, interval_ms=interval, settle_ms=300)
    mid = fut(venue).book("BTCUSDT").mid
    store.upsert("signals", "sig-crash", {"signal_id": "sig-crash", "symbol": "BTCUSDT", "t0": int(time.time() * 1000),
                                          "features": {"mid": float(mid), "atr": float(mid) * 0.01}})
    Producer(r, WallClock()).publish(keys.STRAT_COMMANDS, Decide(signal_id="sig-crash", symbol="BTCUSDT", side="BUY"),
                                     idempotency_key="decide-crash")
    with ThreadWorker(S3, r, s, "s3-a", store):
        sig = wait_until(lambda: (store.get("signals", "sig-crash") or {}).get("decision"), timeout=20,
                         message="decision")
    pos_id, intent_id = sig["pos_id"], sig["intent_id"]
    with ThreadWorker(S4, r, s, "s4-a", store):
        wait_until(lambda: (store.get("order_intents", intent_id) or {}).get("phase") == "DONE", timeout=20,
                   message="entry filled")
    lost = [(eid, f) for eid, f in r.xrange(keys.ORD_RESULTS) if decode(f).payload.intent_id == intent_id]
    r.xdel(keys.ORD_RESULTS, *[eid for eid, _ in lost])  # the results are lost (e.g. an unreplicated write)
    # S3 recorded the decision (audit only); no position record: its results never reached S6.
    assert store.get("strategy_events", f"OPEN_DECIDED:{pos_id}") and store.get("positions", pos_id) is None
    filled = Decimal(store.get("order_intents", intent_id)["result"]["filled_qty"])
    assert venue_position(venue) == filled

    with scheduler_thread(r), ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store), \
            ThreadWorker(S3, r, s, "s3-a", store):
        started = time.monotonic()
        with ThreadWorker(S5, r, s, "s5-a", store):
            adopted = wait_until(lambda: next((x for x in runs(store) if x["adopted"]), None),
                                 timeout=interval / 1000 + 10, message="adoption")
            took = time.monotonic() - started
            stop = wait_until(lambda: fut(venue).open_algo_orders("BTCUSDT"), timeout=20, message="stop armed")
            wait_until(lambda: runs(store)[-1]["consistent"] and runs(store)[-1]["finished_at"] > adopted["finished_at"],
                       timeout=10, message="a consistent run after the adoption")
            lifted = wait_until(lambda: r.get(keys.kill_switch_account("main")) is None, timeout=5,
                                message="REDUCE_ONLY lifted")
            # S6 finally sees the lost result: still exactly one stop (S4 de-duplicates by intent id).
            for _eid, fields in lost:
                r.xadd(keys.ORD_RESULTS, fields)
            wait_until(lambda: drained(r, keys.ORD_RESULTS, "s6") and drained(r, keys.ORD_COMMANDS, "s4"),
                       timeout=10, message="S6 handled the late result, S4 what S6 asked")
            time.sleep(0.3)  # a duplicate stop would have been sent by now: count after a last pause
            wait_until(lambda: drained(r, keys.ORD_COMMANDS, "s4"), timeout=10, message="S4 idle")
            stops = venue_orders(venue, "csl-")
    assert took <= interval / 1000 + 3, f"adopted after {took:.1f}s"
    assert adopted["summary"]["requested_by"] in ("startup", "periodic")
    assert [a["ref"] for a in adopted["adopted"]] == [pos_id] and not adopted["consistent"]
    pos = store.get("positions", pos_id)  # the late result was not booked a second time
    assert (pos["state"], Decimal(pos["qty"]), pos["adopted_by"]) == ("ACTIVE", filled, "reconciler")
    assert len(stop) == 1 and stop[0].client_order_id == client_order_id(f"{pos_id}:sl1", "sl")
    assert stop[0].reduce_only and stop[0].side == "SELL" and stop[0].qty == filled
    assert stops == {client_order_id(f"{pos_id}:sl1", "sl"): 1}
    audits = [e.payload for e in stream(r, keys.OPS_EVENTS) if e.payload.kind.startswith("KILL_SWITCH")]
    assert [(a.kind, a.actor) for a in audits] == [("KILL_SWITCH_SET", "s5-reconciler"),
                                                   ("KILL_SWITCH_CLEARED", "s5-reconciler")] and lifted


def test_work_in_flight_is_deferred_not_repaired(r, env, venue):
    """S4 sent the entry and the venue filled it, but S4 has not recorded the reply yet."""
    s, store = env
    use_bundle(store, interval_ms=0, settle_ms=3000)
    cid = client_order_id("flight-1", "mkt")
    fut(venue).new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=Decimal("0.010"), client_id=cid)
    intent = {"intent_id": "flight-1", "market": "FUT", "symbol": "BTCUSDT", "side": "BUY", "qty": "0.010",
              "purpose": "ENTRY"}
    doc = new_leg_doc(intent, "mkt", order_type="MARKET", side="BUY", qty=Decimal("0.010"),
                      now_ms=int(time.time() * 1000))
    store.upsert("orders", "flight-1:mkt", {**doc, "status": "SUBMITTED"})
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-flight")
    assert rep["consistent"] and not (rep["closed"] or rep["adopted"] or rep["fixed"] or rep["unresolved"])
    assert {(d["type"], d["ref"]) for d in rep["deferred"]} == {("order", cid), ("position", "BTCUSDT:BUY")}
    assert store.get("orders", "flight-1:mkt")["status"] == "SUBMITTED"
    assert venue_position(venue) == Decimal("0.010") and not stream(r, keys.ORD_COMMANDS)
    assert r.get(keys.KILL_SWITCH) is None and r.get(keys.kill_switch_account("main")) is None


def test_a_liquidated_position_is_booked_once_at_the_force_order_price(r, env, venue):
    s, store = env
    f = fut(venue)
    f.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=Decimal("0.010"),
                client_id=client_order_id("liq-1", "mkt"))
    store.upsert("positions", "liq-1", {"symbol": "BTCUSDT", "side": "BUY", "qty": "0.010", "state": "ACTIVE",
                                        "account_id": "main", "created_at": minute_ago()})
    # Flat at the venue but never liquidated: the side filter must not hand it the BUY's force order.
    store.upsert("positions", "ghost-s", {"symbol": "BTCUSDT", "side": "SELL", "qty": "0.020", "state": "ACTIVE"})
    assert f.force_orders("BTCUSDT") == []
    liq = Decimal(f.position_risk("BTCUSDT")[0]["liquidationPrice"])
    venue.control("/chimera/v1/market", {"events": [{"market": "futures", "symbol": "BTCUSDT", "kind": "mark",
                                                     "price": str(liq - 1)}]})
    assert venue_position(venue) == 0
    [forced] = f.force_orders("BTCUSDT")
    assert forced["clientOrderId"].startswith("autoclose-") and forced["side"] == "SELL"
    assert (forced["status"], Decimal(forced["executedQty"])) == ("FILLED", Decimal("0.010"))
    assert f.api.users_force_orders(symbol="BTCUSDT", auto_close_type="ADL").data() == []  # no ADL locally
    with pytest.raises(BadRequestError, match="autoCloseType"):
        f.api.users_force_orders(symbol="BTCUSDT", auto_close_type="BOGUS")
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-liq")
    pos = store.get("positions", "liq-1")
    assert (pos["state"], pos["qty"], pos["reconcile"]) == ("CLOSED", "0", "LIQUIDATED")
    assert Decimal(pos["exit_price"]) == Decimal(forced["avgPrice"])
    assert store.get("positions", "ghost-s")["reconcile"] == "CLOSED_NOT_AT_VENUE"
    assert {(c["ref"], c["action"]) for c in rep["closed"]} == {("liq-1", "LIQUIDATED"),
                                                                ("ghost-s", "CLOSED_NOT_AT_VENUE")}
    booked = store.get("liquidations", f"main:{forced['orderId']}")
    assert booked["pos_ids"] == ["liq-1"] and booked["kind"] == "LIQUIDATED"
    # The liquidation trade is a fill with the venue's realized PnL and fee, and the position carries them.
    [trade] = f.trades("BTCUSDT", str(forced["orderId"]))
    fill = store.get("fills", f"FUT:BTCUSDT:{trade['id']}")
    assert (fill["purpose"], fill["pos_id"], fill["qty"]) == ("LIQUIDATED", "liq-1", str(trade["qty"]))
    assert Decimal(fill["realized_pnl"]) == Decimal(str(trade["realizedPnl"])) == Decimal(pos["realized_pnl"]) < 0
    assert Decimal(fill["fee"]) == Decimal(str(trade["commission"])) == Decimal(pos["fees"])
    assert store.get("strategy_events", "RECONCILE_LIQUIDATION:run-liq:liq-1")["exit_price"] == forced["avgPrice"]
    errors = [a.payload for a in stream(r, keys.ALERTS) if a.payload.level == "ERROR"]
    assert [(a.code, a.context["ref"]) for a in errors] == [("RECONCILE_LIQUIDATION", "liq-1")]
    # A later ghost on the same side is not handed the already booked force order.
    store.upsert("positions", "ghost-b", {"symbol": "BTCUSDT", "side": "BUY", "qty": "0.010", "state": "ACTIVE"})
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        again = reconcile(r, store, "run-liq-2")
        third = reconcile(r, store, "run-liq-3")
    assert [(c["ref"], c["action"]) for c in again["closed"]] == [("ghost-b", "CLOSED_NOT_AT_VENUE")]
    assert not third["closed"] and third["consistent"]
    assert len(store.query("liquidations", {})) == 1
    assert [e["_key"] for e in store.query("strategy_events", {"kind": "RECONCILE_LIQUIDATION"})] == \
        ["RECONCILE_LIQUIDATION:run-liq:liq-1"]
