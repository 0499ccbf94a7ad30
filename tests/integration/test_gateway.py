"""S12 gateway against a real Redis (standalone + cluster) and the SQLite store, via Litestar's TestClient.

Routes are thin producers: each command test decodes what landed on the stream.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from litestar.testing import TestClient

from chimera.schemas.envelope import decode
from chimera.schemas.strategy import decode_kill_switch
from chimera.streams import keys
from tests.support.gateway import bearer, gateway_app


@pytest.fixture
def client(r, settings):
    """Signed in as an admin (the unversioned paths are kept, guarded like their /v1 twins)."""
    app, store = gateway_app(settings, r)
    with TestClient(app) as c:
        c.store = store
        c.headers.update(bearer(c, "admin"))
        yield c


def entries(r, stream):
    return [decode(f) for _, f in r.xrange(stream)]


def test_post_order_publishes_submit_order_and_is_pollable(client, r):
    resp = client.post("/orders", json={"symbol": "BTCUSDT", "side": "BUY", "qty": "0.010", "sl_price": "25000",
                                        "account_id": "sub1"})
    assert resp.status_code == 202
    intent_id = resp.json()["intent_id"]
    [env] = entries(r, keys.ORD_COMMANDS)
    assert env.type == "submit_order" and env.idempotency_key == intent_id and env.account_id == "sub1"
    assert env.payload.intent.qty == Decimal("0.010") and env.payload.intent.sl_price == Decimal("25000")
    # Not yet processed by S4: pollable as PENDING; then from the store once S4 wrote it.
    assert client.get(f"/orders/{intent_id}").json()["phase"] == "PENDING"
    client.store.upsert("order_intents", intent_id, {"intent_id": intent_id, "phase": "DONE", "symbol": "BTCUSDT"})
    client.store.upsert("orders", f"{intent_id}:mkt", {"intent_id": intent_id, "leg": "mkt", "status": "FILLED",
                                                        "symbol": "BTCUSDT", "created_at": 1})
    got = client.get(f"/orders/{intent_id}").json()
    assert got["phase"] == "DONE" and got["legs"][0]["status"] == "FILLED"
    assert client.get("/orders", params={"symbol": "BTCUSDT"}).json()["count"] == 1


@pytest.mark.parametrize("body,field", [
    ({"symbol": "BTCUSDT", "side": "BUY"}, "qty"),
    ({"symbol": "BTCUSDT", "side": "HOLD", "qty": "1"}, "side"),
    ({"symbol": "BTCUSDT", "side": "BUY", "qty": "-1"}, "qty"),
])
def test_invalid_order_body_is_400_naming_the_field(client, r, body, field):
    resp = client.post("/orders", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == field
    assert r.xlen(keys.ORD_COMMANDS) == 0


@pytest.mark.parametrize("body,field", [
    ({"symbol": "BTCUSDT", "side": "BUY", "qty": "1", "exec_policy": "LIMIT"}, "price"),
    ({"symbol": "BTCUSDT", "side": "BUY", "qty": "1", "exec_policy": "STOP"}, "stop_price"),
])
def test_schema_valid_order_breaking_a_rule_is_422_naming_the_field(client, r, body, field):
    resp = client.post("/orders", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == field
    assert r.xlen(keys.ORD_COMMANDS) == 0


def test_unknown_order_is_404(client):
    resp = client.get("/orders/nope")
    assert resp.status_code == 404 and resp.json()["error"] == "NOT_FOUND"


def test_cancel_without_mapping_needs_account_id(client, r):
    resp = client.post("/cancel", json={"intent_id": "foreign-1"})
    assert resp.status_code == 422 and resp.json()["error"] == "ACCOUNT_ID_REQUIRED_FOR_CANCEL"
    assert r.xlen(keys.ORD_COMMANDS) == 0
    assert client.post("/cancel", json={"intent_id": "foreign-1", "account_id": "sub1"}).status_code == 202
    # With a mapping (an order placed through the gateway) no account_id is needed.
    iid = client.post("/orders", json={"symbol": "BTCUSDT", "side": "SELL", "qty": "1", "account_id": "sub1",
                                       "intent_id": "mine-1"}).json()["intent_id"]
    assert client.post("/cancel", json={"intent_id": iid}).json()["account_id"] == "sub1"
    cancels = [e for e in entries(r, keys.ORD_COMMANDS) if e.type == "cancel_order"]
    assert [(e.payload.intent_id, e.account_id) for e in cancels] == [("foreign-1", "sub1"), ("mine-1", "sub1")]


def test_kill_switch_is_set_with_ttl_and_audited(client, r):
    resp = client.post("/kill-switch", json={"mode": "HALT_NEW", "ttl_s": 60, "reason": "drill", "set_by": "ops"})
    assert resp.status_code == 201, resp.text
    state = decode_kill_switch(r.get(keys.KILL_SWITCH))
    assert state.mode == "HALT_NEW" and state.set_by == "admin"  # the signed-in caller, not the body's set_by
    assert 0 < r.pttl(keys.KILL_SWITCH) <= 60_000
    assert client.post("/kill-switch", json={"mode": "PANIC", "reason": "x"}).json()["field"] == "mode"
    assert client.post("/kill-switch", json={"mode": "HALT_NEW", "reason": "x", "ttl_s": 0}).json()["field"] == "ttl_s"
    # Lifting is four-eyes: stored, the switch stays until another person approves.
    lift = client.post("/kill-switch", json={"mode": "OFF", "reason": "drill over"})
    assert lift.status_code == 202 and lift.json()["status"] == "PENDING_APPROVAL"
    assert r.get(keys.KILL_SWITCH) is not None
    done = client.post(f"/v1/approvals/{lift.json()['approval_id']}/approve", headers=bearer(client, "risk"))
    assert done.status_code == 200 and done.json()["status"] == "EXECUTED", done.text
    assert r.get(keys.KILL_SWITCH) is None
    ops = entries(r, keys.OPS_EVENTS)
    assert [(e.payload.kind, e.payload.actor) for e in ops] == [
        ("KILL_SWITCH_SET", "admin"), ("APPROVAL_REQUESTED", "admin"), ("APPROVAL_APPROVED", "risk"),
        ("KILL_SWITCH_CLEARED", "risk")]


def test_an_account_kill_switch_binds_that_account_only(client, r):
    resp = client.post("/v1/kill-switch", json={"mode": "HALT_NEW", "reason": "sub1 incident", "account_id": "sub1"})
    assert resp.status_code == 201 and resp.json()["account_id"] == "sub1", resp.text
    assert decode_kill_switch(r.get(keys.kill_switch_account("sub1"))).mode == "HALT_NEW"
    assert r.get(keys.KILL_SWITCH) is None and r.get(keys.kill_switch_account("main")) is None
    bad = client.post("/v1/kill-switch", json={"mode": "HALT_NEW", "reason": "x", "account_id": "ghost"})
    assert bad.status_code == 422 and bad.json()["field"] == "account_id"
    assert client.post("/v1/kill-switch", json={"mode": "HALT_NEW", "reason": "x", "account_id": "all"}
                       ).json()["field"] == "account_id"
    lift = client.post("/v1/kill-switch", json={"mode": "OFF", "reason": "resolved", "account_id": "sub1"})
    assert lift.status_code == 202 and r.get(keys.kill_switch_account("sub1")) is not None
    done = client.post(f"/v1/approvals/{lift.json()['approval_id']}/approve", headers=bearer(client, "risk"))
    assert done.status_code == 200 and done.json()["status"] == "EXECUTED", done.text
    assert r.get(keys.kill_switch_account("sub1")) is None


def test_reconcile_and_transfer_are_published(client, r):
    resp = client.post("/reconcile", json={"scope": "POSITIONS"})
    assert resp.status_code == 202
    [env] = entries(r, keys.RECON_COMMANDS)
    assert env.payload.scope == "POSITIONS" and env.idempotency_key == resp.json()["run_id"]
    assert client.get(f"/reconcile/{resp.json()['run_id']}").status_code == 404  # not run yet
    resp = client.post("/treasury/transfer", json={"asset": "USDT", "amount": "25.5", "direction": "MAIN_UMFUTURE"})
    assert resp.status_code == 202 and resp.json()["status"] == "PENDING_APPROVAL"
    assert r.xlen(keys.TREASURY_COMMANDS) == 0  # four eyes: nothing moves before a second person approves
    ok = client.post(f"/v1/approvals/{resp.json()['approval_id']}/approve", headers=bearer(client, "admin2"))
    assert ok.status_code == 200, ok.text
    [env] = entries(r, keys.TREASURY_COMMANDS)
    assert env.payload.amount == Decimal("25.5") and env.payload.transfer_id == resp.json()["transfer_id"]
    bad = client.post("/treasury/transfer", json={"asset": "USDT", "amount": "1", "direction": "SIDEWAYS"})
    assert bad.status_code == 400 and bad.json()["field"] == "direction"


def test_readers_health_ready_metrics_and_schema(client, r):
    client.store.upsert("positions", "p1", {"symbol": "ETHUSDT", "side": "BUY", "qty": "1", "state": "ACTIVE"})
    client.store.upsert("signals", "s1", {"symbol": "ETHUSDT", "t0": 1})
    assert client.get("/positions", params={"state": "ACTIVE"}).json()["count"] == 1
    assert client.get("/positions", params={"state": "CLOSED"}).json()["count"] == 0
    assert [s["symbol"] for s in client.get("/signals").json()["items"]] == ["ETHUSDT"]
    r.hset(keys.s1_stream_status("main"), mapping={"ws_status": "CONNECTED", "last_connected_at": "5"})
    accounts = {a["account_id"]: a for a in client.get("/accounts").json()["items"]}
    assert accounts["main"]["ws_status"] == "CONNECTED" and accounts["main"]["last_connected_at"] == 5
    assert accounts["sub1"]["ws_status"] == "DISCONNECTED"
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["checks"] == {"redis": "ok", "store": "ok"}
    assert "python_gc_objects_collected_total" in client.get("/metrics").text
    schema = client.get("/schema/openapi.json").json()
    assert {"/v1/orders", "/v1/cancel", "/v1/kill-switch", "/v1/reconcile", "/v1/treasury/transfer",
            "/v1/decide", "/v1/approvals"} <= set(schema["paths"])


def test_role_entry_point_serves_until_stopped(settings, monkeypatch):
    import threading

    import httpx

    from chimera.gateway.app import run
    from chimera.venues.local.testing import free_port
    from tests.support.polling import wait_until

    port = free_port()
    monkeypatch.setenv("CHIMERA_API_PORT", str(port))
    monkeypatch.setenv("CHIMERA_JWT_SECRET", "test-only-signing-key-from-the-environment")
    stop = threading.Event()
    t = threading.Thread(target=run, args=(settings, stop), daemon=True)
    t.start()

    def ready():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=20, interval=0.1, message="gateway ready")
    stop.set()
    t.join(10)
    assert not t.is_alive()


def test_the_placeholder_signing_key_is_refused_and_an_empty_one_is_generated_once(tmp_path):
    import pytest as _pytest

    from chimera.errors import FatalError
    from chimera.gateway.auth import load_auth_config

    secrets_file = tmp_path / "run" / "secrets.json"
    with _pytest.raises(FatalError, match="REPLACE_ME"):
        load_auth_config({"CHIMERA_JWT_SECRET": "REPLACE_ME", "CHIMERA_SECRETS_FILE": str(secrets_file)})
    assert not secrets_file.exists()
    # Empty (the paper k8s overlay): generated into the secrets file, 0600, and the same key next time.
    env = {"CHIMERA_JWT_SECRET": "", "CHIMERA_SECRETS_FILE": str(secrets_file)}
    first = load_auth_config(env).jwt_secret
    assert len(first) >= 48 and secrets_file.stat().st_mode & 0o777 == 0o600
    assert load_auth_config(env).jwt_secret == first


def gauge(text: str, name: str) -> float | None:
    """Value of an unlabelled sample in a Prometheus text exposition, None when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_metrics_export_the_router_figures_from_redis(client, r):
    text = client.get("/metrics").text
    # Nothing observed yet: no made-up zero ratio or latency.
    assert gauge(text, "chimera_router_ack_p95_seconds") is None and gauge(text, "chimera_maker_fill_ratio") is None
    assert gauge(text, "chimera_maker_timeouts_total") == 0
    assert "# TYPE chimera_maker_timeouts_total counter" in text
    r.hset(keys.ROUTER_COUNTERS, mapping={"maker_sent_count": 4, "maker_filled_count": 1, "maker_timeout_count": 3})
    r.rpush(keys.ROUTER_ACK_MS, *range(100, 0, -1))  # 1..100 ms: nearest-rank p95 is the 95th value
    text = client.get("/metrics").text
    assert gauge(text, "chimera_router_ack_p95_seconds") == 0.095
    assert gauge(text, "chimera_maker_fill_ratio") == 0.25
    assert gauge(text, "chimera_maker_timeouts_total") == 3.0


def test_alerts_listed_acknowledged_and_resolved_through_s11s_functions(client):
    client.store.upsert("alerts", "VENUE_DOWN:main", {"code": "VENUE_DOWN", "level": "ERROR", "state": "OPEN",
                                                      "count": 2, "last_seen": 5, "message": "venue unreachable"})
    assert [a["code"] for a in client.get("/v1/alerts", params={"state": "OPEN"}).json()["items"]] == ["VENUE_DOWN"]
    acked = client.post("/v1/alerts/VENUE_DOWN:main/ack")
    assert acked.status_code == 200 and acked.json()["state"] == "ACKED" and acked.json()["acked_by"] == "admin"
    assert client.post("/v1/alerts/VENUE_DOWN:main/resolve").json()["state"] == "RESOLVED"
    assert client.post("/v1/alerts/VENUE_DOWN:main/ack").status_code == 409  # a resolved alert is not acked
    assert client.post("/v1/alerts/nope/ack").status_code == 404
    assert client.store.get("alerts", "VENUE_DOWN:main")["resolved_by"] == "admin"
