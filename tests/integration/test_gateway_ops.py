"""Seed 000 (HedgeStack) through the gateway on real Redis (single + the 6-node cluster) and SQLite:
the All view of positions, accounts with S1's stream status, STATE_SNAPSHOT + ACCOUNT_STREAM_STATUS
on the live channel, /v1/ops/metrics and /v1/ops/health.

Expected figures come from the truth, never from the code under test: the documents S4 wrote after
trading at the local venue, the venue's own fills, the stream entries the test published, and
S1's StatusBoard hashes read straight from Redis.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from decimal import Decimal

import httpx
import pytest
from litestar.testing import TestClient

from chimera.feeds.role import StatusBoard
from chimera.handlers.router.role import SPEC as S4
from chimera.schemas.envelope import decode
from chimera.schemas.messages import OrderIntent, SubmitOrder
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.streams.redis import connect
from chimera.venues.binance.adapter import FuturesTrading
from chimera.workers.clock import ManualClock, WallClock
from chimera.workers.runtime import ensure_group
from chimera.workers.scheduler_role import run_scheduler
from tests.support.futures_venue import btc_futures_venue
from tests.support.gateway import bearer, gateway_app, served
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker


def _client(settings, r, **kw):
    app, store = gateway_app(settings, r, **kw)
    c = TestClient(app)
    c.__enter__()
    c.store = store
    c.headers.update(bearer(c, "viewer"))  # every route here is read-only: the least role must do
    return c


@pytest.fixture
def client(r, settings):
    c = _client(settings, r)
    yield c
    c.__exit__(None, None, None)


def fut(venue, account: str) -> FuturesTrading:
    """The official SDK client of ``account`` at the venue: its own view of its own trades."""
    return FuturesTrading(venue.base_url, *venue.keys[account])


def ops_entries(r) -> list:
    return [decode(f, eid.decode(), keys.OPS_EVENTS) for eid, f in r.xrange(keys.OPS_EVENTS)]


# --- accounts and their stream status ------------------------------------------------------------------------


def test_accounts_show_s1s_stream_status_per_account_and_market(client, r):
    board = StatusBoard(r, WallClock())
    board.set("main", "CONNECTED", market="perp")
    board.set("main", "CONNECTED", market="user_fut")
    board.set("main", "DISCONNECTED", "listenKey expired", market="user_fut")
    items = {a["account_id"]: a for a in client.get("/v1/accounts").json()["items"]}
    assert set(items) == {"main", "sub1"}  # paper without an accounts file: the venue's two demo accounts
    truth = {k.decode(): v.decode() for k, v in r.hgetall(keys.s1_stream_status("main")).items()}
    main = items["main"]
    assert main["ws_status"] == "DISCONNECTED" == truth["ws_status"]  # the worst of its streams
    assert main["last_error"] == truth["last_error"] == "user_fut: listenKey expired"
    assert main["last_connected_at"] == int(truth["last_connected_at"]) > 0
    assert main["markets"]["perp"]["ws_status"] == "CONNECTED"
    assert main["markets"]["user_fut"] == {"ws_status": "DISCONNECTED", "last_error": "listenKey expired",
                                           "last_connected_at": int(r.hget(keys.s1_stream_status_market(
                                               "main", "user_fut"), "last_connected_at"))}
    # sub1: S1 never reported it.
    assert items["sub1"]["ws_status"] == "DISCONNECTED" and items["sub1"]["last_connected_at"] == 0
    # Each change S1 saw went out as an event on ops:events (the UI's live channel reads it).
    changes = [(e.account_id, e.payload.market, e.payload.ws_status) for e in ops_entries(r)
               if e.type == "account_stream_status"]
    assert changes == [("main", "perp", "CONNECTED"), ("main", "user_fut", "CONNECTED"),
                       ("main", "user_fut", "DISCONNECTED")]


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_live_channel_sends_state_snapshot_first_then_account_stream_status(r, settings):
    board = StatusBoard(r, WallClock())
    board.set("main", "CONNECTED", market="perp")
    app, _store = gateway_app(settings, r)
    with served(app) as base, httpx.Client(base_url=base, timeout=10) as c:
        tok = c.post("/v1/auth/login", json={"username": "viewer", "password": "correct horse battery"}).json()
        c.cookies.set("chimera_session", tok["access_token"])
        events: list[tuple[str, dict, str]] = []
        changed = threading.Event()

        def change_once_connected():
            wait_until(lambda: events, timeout=10, interval=0.02, message="snapshot received")
            board.set("sub1", "CONNECTING", market="user_fut")
            changed.set()

        threading.Thread(target=change_once_connected, daemon=True).start()
        with c.stream("GET", "/ui/events", params={"topic": "accounts"}) as resp:
            assert resp.status_code == 200
            name, eid = "", ""
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("id:"):
                    eid = line[3:].strip()
                elif line.startswith("data:") and line[5:].strip():  # the opening comment has an empty one
                    events.append((name, json.loads(line[5:]), eid))
                    name, eid = "", ""
                    if events[-1][0] == "ACCOUNT_STREAM_STATUS":
                        break
    assert changed.is_set()
    first, *_, last = events
    assert first[0] == "STATE_SNAPSHOT" and first[2] == ""
    snap = {a["account_id"]: a for a in first[1]["accounts_status"]}
    assert snap["main"]["ws_status"] == "CONNECTED" and snap["main"]["markets"]["perp"]["ws_status"] == "CONNECTED"
    assert {row["id"] for row in first[1]["rows"]} == {"row-acct-main", "row-acct-sub1"}
    # The update: S1's event, with the id of its entry on ops:events (Last-Event-ID resumes from it).
    [(entry_id, _f)] = [(e, f) for e, f in r.xrange(keys.OPS_EVENTS) if decode(f).account_id == "sub1"]
    assert last[0] == "ACCOUNT_STREAM_STATUS" and last[2] == entry_id.decode()
    assert (last[1]["account_id"], last[1]["market"], last[1]["ws_status"]) == ("sub1", "user_fut", "CONNECTING")
    assert last[1]["account"]["ws_status"] == r.hget(keys.s1_stream_status("sub1"), "ws_status").decode()


# --- positions: the All view ------------------------------------------------------------------------------


def _pos(pid, account, symbol, side, qty, entry, state="ACTIVE"):
    return {"pos_id": pid, "account_id": account, "symbol": symbol, "side": side, "qty": qty,
            "entry_price": entry, "state": state, "market": "FUT"}


def test_positions_all_view_aggregates_open_positions_over_accounts(client, r):
    docs = [_pos("p1", "main", "BTCUSDT", "BUY", "0.010", "60000"), _pos("p2", "sub1", "BTCUSDT", "BUY", "0.030", "62000"),
            _pos("p3", "sub1", "ETHUSDT", "SELL", "0.5", "3000"), _pos("p4", "main", "BTCUSDT", "BUY", "1", "1", "CLOSED")]
    for d in docs:
        client.store.upsert("positions", d["pos_id"], d)
    got = client.get("/v1/positions", params={"account_id": "all"}).json()
    assert got["account_id"] == "all" and got["count"] == 4
    agg = {(a["symbol"], a["side"]): a for a in got["aggregated"]}
    assert set(agg) == {("BTCUSDT", "BUY"), ("ETHUSDT", "SELL")}  # the CLOSED one is not exposure
    btc = agg["BTCUSDT", "BUY"]
    assert Decimal(btc["qty"]) == Decimal("0.040") and btc["positions"] == 2
    # Quantity-weighted entry: (0.010*60000 + 0.030*62000) / 0.040 = 61500.
    assert Decimal(btc["entry_price"]) == Decimal("61500")
    assert {k: Decimal(v) for k, v in btc["accounts"].items()} == {"main": Decimal("0.010"), "sub1": Decimal("0.030")}
    one = client.get("/v1/positions", params={"account_id": "sub1"}).json()
    assert {p["pos_id"] for p in one["items"]} == {"p2", "p3"} and "aggregated" not in one
    bad = client.get("/v1/positions", params={"account_id": "no such"})
    assert bad.status_code == 400 and bad.json()["field"] == "account_id"


def _fill(store, account, trade_id, strategy, side, qty, price):
    from chimera.accounts import role as vpos
    from chimera.accounts import virtual as vp

    vpos.change(store, account, "BTCUSDT", lambda b: vp.book_fill(
        b, trade_id=trade_id, strategy=strategy, side=side, qty=Decimal(qty), price=Decimal(price))[0])


def test_positions_carry_the_strategies_virtual_positions(client):
    """Several strategies share one account (vpos role's books): the All view lists each one's share."""
    from chimera.store.collections import VIRTUAL_BOOKS

    _fill(client.store, "main", "11", "trend", "BUY", "0.010", "60000")
    _fill(client.store, "sub1", "12", "trend", "BUY", "0.020", "61000")
    _fill(client.store, "sub1", "13", "meanrev", "BUY", "0.005", "61200")
    truth = {(p["account_id"], p["strategy"]): Decimal(p["qty"])
             for b in client.store.query(VIRTUAL_BOOKS, {}) for p in b["positions"]}
    assert truth == {("main", "trend"): Decimal("0.010"), ("sub1", "trend"): Decimal("0.020"),
                     ("sub1", "meanrev"): Decimal("0.005")}
    got = client.get("/v1/positions", params={"account_id": "all"}).json()
    assert {(v["account_id"], v["strategy"]): Decimal(v["qty"]) for v in got["virtual"]} == truth
    assert got["unassigned"] == []
    sub1 = client.get("/v1/positions", params={"account_id": "sub1"}).json()["virtual"]
    assert {(v["account_id"], v["strategy"]) for v in sub1} == {("sub1", "trend"), ("sub1", "meanrev")}
    meanrev = next(v for v in sub1 if v["strategy"] == "meanrev")
    assert Decimal(meanrev["avg_cost"]) == Decimal("61200")


def test_the_all_view_is_read_only(client, r):
    trader = bearer(client, "trader")
    resp = client.post("/v1/orders", json={"symbol": "BTCUSDT", "side": "BUY", "qty": "0.01", "account_id": "all"},
                       headers=trader)
    assert resp.status_code == 422 and resp.json() | {"detail": ""} == {
        "error": "ALL_VIEW_READ_ONLY", "field": "account_id", "detail": ""}
    assert client.post("/v1/reconcile", json={"account_id": "all"}, headers=trader).json()["field"] == "account_id"
    assert r.xlen(keys.ORD_COMMANDS) == 0 and r.xlen(keys.RECON_COMMANDS) == 0


# --- /v1/ops/metrics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("params,field", [
    ({"window_sec": "5"}, "window_sec"), ({"window_sec": "abc"}, "window_sec"),
    ({"window_sec": str(8 * 86400)}, "window_sec"), ({"account_id": "a b"}, "account_id"),
])
def test_ops_metrics_bad_query_is_400_naming_the_field(client, params, field):
    resp = client.get("/v1/ops/metrics", params=params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == field


def test_ops_metrics_of_an_unknown_account_is_422_naming_it(client):
    resp = client.get("/v1/ops/metrics", params={"account_id": "ghost"})
    assert resp.status_code == 422 and resp.json()["error"] == "UNKNOWN_ACCOUNT"
    assert resp.json()["field"] == "account_id" and "main, sub1" in resp.json()["detail"]


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_ops_routes_are_documented_in_openapi(client):
    doc = client.get("/schema/openapi.json").json()
    op = doc["paths"]["/v1/ops/metrics"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["window_sec"]["schema"]["minimum"] == 60 and params["window_sec"]["schema"]["maximum"] == 604800
    assert "pattern" in json.dumps(params["account_id"]["schema"])
    assert {"200", "400", "401", "403", "422"} <= set(op["responses"])
    assert {"status", "checks", "started_at", "uptime_sec"} <= set(
        _schema(doc, doc["paths"]["/v1/ops/health"]["get"]["responses"]["200"])["properties"])
    assert {"generated_at", "window_sec", "by_account", "totals", "alerts"} <= set(_schema(doc, op["responses"]["200"])["properties"])


def _schema(doc, resp):
    ref = resp["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    return doc["components"]["schemas"][ref]


def test_ops_metrics_stream_lag_per_account_from_the_stream(r, settings):
    """Entries a group has not finished, counted by the account their envelope names."""
    s = dataclasses.replace(settings, extra={"ops_alerts": {"stream_lag": 3}})
    c = _client(s, r)
    try:
        prod = Producer(r, WallClock())
        ensure_group(r, keys.ORD_COMMANDS, keys.group("s4"))
        for i in range(4):
            prod.publish(keys.ORD_COMMANDS, SubmitOrder(intent=OrderIntent(
                intent_id=f"lag-s{i}", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.001"))),
                idempotency_key=f"lag-s{i}", account_id="sub1")
        prod.publish(keys.ORD_COMMANDS, SubmitOrder(intent=OrderIntent(
            intent_id="lag-m", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.001"))),
            idempotency_key="lag-m", account_id="main")
        # Two delivered but not acked: pending, still waiting.
        r.xreadgroup(keys.group("s4"), "probe", {keys.ORD_COMMANDS: ">"}, count=2)
        got = c.get("/v1/ops/metrics", params={"window_sec": 600}).json()
        info = next(g for g in r.xinfo_groups(keys.ORD_COMMANDS) if g["name"].decode() == keys.group("s4"))
        assert info["lag"] + info["pending"] == 5  # Redis agrees with what the test published
        assert got["by_account"]["sub1"]["stream_lag"] == 4 and got["by_account"]["main"]["stream_lag"] == 1
        [g] = [g for g in got["totals"]["groups"] if g["stream"] == keys.ORD_COMMANDS]
        assert (g["lag"], g["pending"]) == (3, 2)
        codes = {(a["code"], a["account_id"]) for a in got["alerts"]}
        assert ("PROCESSING_LAG", "sub1") in codes and ("PROCESSING_LAG", "main") not in codes
        assert ("PROCESSING_LAG", None) in codes  # the group as a whole: 5 > 3
        only = c.get("/v1/ops/metrics", params={"account_id": "main", "window_sec": 600}).json()
        assert list(only["by_account"]) == ["main"] and only["totals"]["stream_lag"] == 1
    finally:
        c.__exit__(None, None, None)


@pytest.fixture
def venue(tmp_path):
    with btc_futures_venue(tmp_path) as v:
        v.control("/chimera/v1/replay", {"speed": 1})
        yield v


def test_ops_metrics_per_account_after_trading_at_the_venue(r, settings, venue):
    """Orders for main and sub1 through the gateway, S4 at the local venue; the figures are checked
    against the venue's trades and S4's documents, the latency against the stream entry ids."""
    s = dataclasses.replace(settings, venue="paper", venue_url=venue.base_url)
    c = _client(s, r)
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(r, WallClock(), "sched-ops", stop), daemon=True)
    sched.start()
    trader = bearer(c, "trader")
    try:
        with ThreadWorker(S4, r, s, "s4-ops", c.store):
            orders = [("om1", "main", "BUY", "0.010", False), ("om2", "main", "BUY", "0.005", False),
                      ("os1", "sub1", "SELL", "0.020", False),
                      ("os2", "sub1", "SELL", "0.001", True)]  # reduce-only with no position: the venue refuses it
            for iid, acc, side, qty, ro in orders:
                resp = c.post("/v1/orders", headers=trader, json={
                    "symbol": "BTCUSDT", "side": side, "qty": qty, "account_id": acc, "intent_id": iid,
                    "reduce_only": ro, "purpose": "EXIT" if ro else "ENTRY"})
                assert resp.status_code == 202, resp.text
            for iid, *_ in orders:
                wait_until(lambda iid=iid: (c.store.get("order_intents", iid) or {}).get("phase") == "DONE",
                           timeout=30, message=f"{iid} done")
            wait_until(lambda: sum(Decimal(f["qty"]) for f in c.store.query("fills", {})) == Decimal("0.035"),
                       timeout=20, message="fills booked")
        got = c.get("/v1/ops/metrics", params={"window_sec": 600}).json()
    finally:
        stop.set()
        sched.join(5)
        c.__exit__(None, None, None)
    legs = {leg["intent_id"]: leg for leg in c.store.query("orders", {})}
    assert legs["os2"]["status"] == "REJECTED", legs["os2"]
    for acc, iids in (("main", ["om1", "om2"]), ("sub1", ["os1", "os2"])):
        m = got["by_account"][acc]
        venue_trades = [t for i in iids if legs[i].get("venue_order_id")
                        for t in fut(venue, acc).trades("BTCUSDT", legs[i]["venue_order_id"])]
        assert m["orders"] == 2 and m["fills"] == len(venue_trades)
        assert Decimal(m["filled_qty"]) == sum(Decimal(str(t["qty"])) for t in venue_trades)
        assert Decimal(m["notional_usdt"]) == sum(Decimal(str(t["qty"])) * Decimal(str(t["price"]))
                                                  for t in venue_trades)
        # Slippage: each fill against its intent's arrival mid, in bps, positive = worse.
        slips = []
        for i in iids:
            mid = c.store.get("order_intents", i).get("arrival_mid")
            for t in (fut(venue, acc).trades("BTCUSDT", legs[i]["venue_order_id"]) if legs[i].get("venue_order_id")
                      else []):
                sign = 1 if legs[i]["side"] == "BUY" else -1
                slips.append(float((Decimal(str(t["price"])) - Decimal(mid)) / Decimal(mid) * 10_000 * sign))
        assert m["slippage_bps"]["samples"] == len(slips) and m["slippage_bps"]["max"] == pytest.approx(max(slips))
    assert got["by_account"]["sub1"]["rejects"] == 1 and got["by_account"]["sub1"]["reject_rate"] == 0.5
    assert got["by_account"]["main"]["rejects"] == 0
    # Latency: the command's entry on ord:{commands} -> the first result on ord:{results} (Redis time).
    cmd = {decode(f).payload.intent.intent_id: int(e.decode().split("-")[0]) for e, f in r.xrange(keys.ORD_COMMANDS)}
    res: dict[str, int] = {}
    for e, f in r.xrange(keys.ORD_RESULTS):
        res.setdefault(decode(f).payload.intent_id, int(e.decode().split("-")[0]))
    main_lat = sorted(res[i] - cmd[i] for i in ("om1", "om2"))
    assert got["by_account"]["main"]["latency_ms"]["max"] == main_lat[-1]
    assert got["by_account"]["main"]["latency_ms"]["samples"] == 2
    t = got["totals"]
    assert t["orders"] == 4 and t["rejects"] == 1 and Decimal(t["filled_qty"]) == Decimal("0.035")
    assert t["router_ack_p95_ms"] is not None  # S4's port sampled the acks
    assert got["window_sec"] == 600 and got["generated_at"] > 0


# --- /v1/ops/health ------------------------------------------------------------------------------------------


def _checks(body) -> dict[str, dict]:
    return {c["name"]: c for c in body["checks"]}


def test_ops_health_reports_roles_accounts_and_uptime(r, settings):
    clock = ManualClock(1_000_000)
    s = dataclasses.replace(settings, extra={"ops_alerts": {"heartbeat_stale_s": 2}})
    c = _client(s, r, clock=clock)
    try:
        clock.advance(7_500)
        body = c.get("/v1/ops/health").json()
        assert body["started_at"] == 1_000_000 and body["uptime_sec"] == 7
        checks = _checks(body)
        assert checks["redis"]["status"] == "OK" and checks["store"]["status"] == "OK"
        assert checks["heartbeat:s4"]["status"] == "DEGRADED"  # nothing ever ran
        assert checks["account_streams:main"]["status"] == "DEGRADED"  # S1 never reported
        assert body["status"] == "DEGRADED"
        board = StatusBoard(r, WallClock())
        board.set("main", "CONNECTED", market="perp")
        board.set("sub1", "CONNECTED", market="user_fut")
        with ThreadWorker(S4, r, s, "s4-health", c.store):
            wait_until(lambda: _checks(c.get("/v1/ops/health").json())["heartbeat:s4"]["status"] == "OK",
                       timeout=15, message="s4 heartbeat")
        checks = _checks(c.get("/v1/ops/health").json())
        assert checks["account_streams:main"]["status"] == "OK"
        # Stopped: its consumer stays in Redis but goes idle; past the threshold it is not running.
        idle = wait_until(lambda: (x := _checks(c.get("/v1/ops/health").json())["heartbeat:s4"])["status"]
                          == "DEGRADED" and x, timeout=15, message="s4 stale")
        truth = min(x["idle"] for x in r.xinfo_consumers(keys.ORD_COMMANDS, keys.group("s4")))
        assert idle["idle_ms"] >= 2000 and truth >= 2000
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_ops_health_fails_when_redis_is_unreachable(r, settings):
    """Sign-in itself needs Redis (revocations, rate limits), so this calls the service the route wraps."""
    from chimera.gateway.ops import ops_health
    from tests.support.redis_servers import free_port

    app, _store = gateway_app(settings, r)
    app.state.chimera.r = connect(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    body = ops_health(app.state.chimera)
    assert body["status"] == "FAIL"
    assert _checks(body)["redis"]["status"] == "FAIL" and _checks(body)["store"]["status"] == "OK"


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_ops_health_fails_when_the_store_is_unreachable(r, settings, tmp_path):
    from chimera.gateway.ops import ops_health
    from chimera.store import open_store

    app, _store = gateway_app(settings, r)
    path = tmp_path / "gone.sqlite"
    app.state.chimera.store = open_store(f"sqlite:///{path}")
    path.write_bytes(b"not a database " * 100)  # a worker thread's connection now fails to open
    got: list[dict] = []
    t = threading.Thread(target=lambda: got.append(ops_health(app.state.chimera)))
    t.start()
    t.join(30)
    [body] = got
    assert body["status"] == "FAIL" and _checks(body)["store"]["status"] == "FAIL"
    assert _checks(body)["redis"]["status"] == "OK"


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_ops_metrics_window_and_thresholds_from_the_active_bundle(r, settings):
    from chimera.workers.config import activate

    clock = ManualClock(10_000_000_000)
    c = _client(settings, r, clock=clock)
    try:
        now = clock.now_ms()
        for iid, acc, age_s, status in (("w-old", "sub1", 7200, "REJECTED"), ("w-new", "sub1", 60, "REJECTED"),
                                        ("w-ok", "sub1", 30, "FILLED")):
            c.store.upsert("order_intents", iid, {"intent_id": iid, "account_id": acc, "created_at": now - age_s * 1000})
            c.store.upsert("orders", f"{iid}:mkt", {"intent_id": iid, "leg": "mkt", "status": status,
                                                    "created_at": now - age_s * 1000})
        hour = c.get("/v1/ops/metrics", params={"account_id": "sub1", "window_sec": 3600}).json()
        assert (hour["by_account"]["sub1"]["orders"], hour["by_account"]["sub1"]["rejects"]) == (2, 1)
        day = c.get("/v1/ops/metrics", params={"account_id": "sub1", "window_sec": 86400}).json()
        assert (day["by_account"]["sub1"]["orders"], day["by_account"]["sub1"]["rejects"]) == (3, 2)
        assert not [a for a in hour["alerts"] if a["code"] == "REJECT_RATE_HIGH"]  # 2 legs < min_orders 5
        activate(c.store, "ops-test", 1, {"ops_alerts": {"min_orders": 2, "reject_rate": 0.4}})
        hour = c.get("/v1/ops/metrics", params={"account_id": "sub1", "window_sec": 3600}).json()
        assert hour["thresholds"]["reject_rate"] == 0.4
        [alert] = [a for a in hour["alerts"] if a["code"] == "REJECT_RATE_HIGH"]
        assert (alert["account_id"], alert["value"], alert["threshold"]) == ("sub1", 0.5, 0.4)
    finally:
        c.__exit__(None, None, None)
