"""Four-eyes approvals: stored request, approver != requester, expiry, exact replay on execution."""

from __future__ import annotations

from decimal import Decimal

import pytest
from litestar.testing import TestClient

from chimera.gateway.auth import add_service
from chimera.schemas.envelope import decode
from chimera.store.collections import APPROVALS, TREASURY_TRANSFERS
from chimera.streams import keys
from tests.support.gateway import ManualClock, bearer, gateway_app


@pytest.fixture
def clock():
    return ManualClock(1_700_000_000_000)


@pytest.fixture
def gw(r, settings, clock):
    app, store = gateway_app(settings, r, clock=clock, access_ttl_s=3 * 24 * 3600)
    with TestClient(app) as c:
        c.store = store
        c.h = {role: bearer(c, role) for role in ("viewer", "trader", "risk", "risk2", "admin")}
        yield c


def transfers(r):
    return [decode(f) for _, f in r.xrange(keys.TREASURY_COMMANDS)]


def test_manual_transfer_needs_a_second_person_and_replays_exactly(gw, r):
    req = gw.post("/v1/treasury/transfer", json={"asset": "USDT", "amount": "125.50", "direction": "UMFUTURE_MAIN",
                                                 "reason": "month end"}, headers=gw.h["risk"]).json()
    aid = req["approval_id"]
    stored = gw.get(f"/v1/approvals/{aid}", headers=gw.h["viewer"]).json()
    assert stored["status"] == "PENDING" and stored["requested_by"] == "risk" and stored["kind"] == "TREASURY_TRANSFER"
    same = gw.post(f"/v1/approvals/{aid}/approve", headers=gw.h["risk"])
    assert same.status_code == 403 and same.json()["error"] == "SAME_PERSON"
    assert gw.post(f"/v1/approvals/{aid}/approve", headers=gw.h["trader"]).status_code == 403  # role
    assert transfers(r) == []
    ok = gw.post(f"/v1/approvals/{aid}/approve", headers=gw.h["risk2"])
    assert ok.status_code == 200 and ok.json()["status"] == "EXECUTED" and ok.json()["decided_by"] == "risk2"
    [env] = transfers(r)
    p = env.payload
    assert (p.transfer_id, p.asset, p.amount, p.direction, p.requested_by) == (
        req["transfer_id"], "USDT", Decimal("125.50"), "UMFUTURE_MAIN", "risk")
    assert env.idempotency_key == req["transfer_id"]
    again = gw.post(f"/v1/approvals/{aid}/approve", headers=gw.h["admin"])
    assert again.status_code == 409 and len(transfers(r)) == 1  # executed once
    ops = [decode(f).payload for _, f in r.xrange(keys.OPS_EVENTS)]
    assert [(o.kind, o.actor, o.detail["approval_id"]) for o in ops] == [
        ("APPROVAL_REQUESTED", "risk", aid), ("APPROVAL_APPROVED", "risk2", aid)]


def test_rejected_and_expired_requests_never_execute(gw, r, clock):
    def ask():
        return gw.post("/v1/treasury/transfer", json={"asset": "USDT", "amount": "5", "direction": "MAIN_UMFUTURE"},
                       headers=gw.h["risk"]).json()["approval_id"]

    a, b = ask(), ask()
    assert gw.post(f"/v1/approvals/{a}/reject", headers=gw.h["admin"], json={"note": "no"}).json()["status"] == "REJECTED"
    assert gw.post(f"/v1/approvals/{a}/approve", headers=gw.h["admin"]).status_code == 409
    clock.set(clock.now_ms() + 24 * 3600 * 1000 + 1)
    late = gw.post(f"/v1/approvals/{b}/approve", headers=gw.h["admin"])
    assert late.status_code == 409 and "EXPIRED" in late.json()["detail"]
    assert gw.get(f"/v1/approvals/{b}", headers=gw.h["viewer"]).json()["status"] == "EXPIRED"
    assert transfers(r) == []
    assert {x["approval_id"] for x in gw.get("/v1/approvals", params={"status": "EXPIRED"},
                                               headers=gw.h["viewer"]).json()["items"]} == {b}


def test_s6_top_up_waits_for_a_person_then_goes_to_s1_as_stored(gw, r):
    # What S6's auto-transfer check leaves behind (handlers/positions/transfer.py).
    gw.store.insert_if_absent(TREASURY_TRANSFERS, "s6-topup-USDT-42", {
        "transfer_id": "s6-topup-USDT-42", "asset": "USDT", "amount": "37.25", "direction": "MAIN_UMFUTURE",
        "state": "PENDING", "requested_by": "s6", "reason_requested": "free futures margin 12.75 below 50"})
    items = gw.get("/v1/approvals", params={"status": "PENDING"}, headers=gw.h["viewer"]).json()["items"]
    [ap] = [x for x in items if x["requested_by"] == "s6"]
    assert ap["request"]["amount"] == "37.25"
    svc = {"Authorization": f"Bearer {add_service(gw.store, 'ci-bot', 'admin')}"}
    assert gw.post(f"/v1/approvals/{ap['approval_id']}/approve", headers=svc).status_code == 403  # machines can't
    assert gw.post(f"/v1/approvals/{ap['approval_id']}/approve", headers=gw.h["admin"]).json()["status"] == "EXECUTED"
    [env] = transfers(r)
    assert (env.payload.transfer_id, env.payload.amount, env.payload.requested_by) == (
        "s6-topup-USDT-42", Decimal("37.25"), "s6")
    assert gw.store.get(APPROVALS, ap["approval_id"])["decided_by"] == "admin"


def test_kill_switch_lift_is_four_eyes_and_trader_cannot_ask(gw, r):
    assert gw.post("/v1/kill-switch", json={"mode": "FLATTEN", "reason": "incident"}, headers=gw.h["trader"]).status_code == 201
    assert gw.post("/v1/kill-switch", json={"mode": "OFF", "reason": "x"}, headers=gw.h["trader"]).status_code == 403
    lift = gw.post("/v1/kill-switch", json={"mode": "OFF", "reason": "resolved"}, headers=gw.h["risk"]).json()
    assert r.get(keys.KILL_SWITCH) is not None
    assert gw.post(f"/v1/approvals/{lift['approval_id']}/approve", headers=gw.h["risk2"]).json()["status"] == "EXECUTED"
    assert r.get(keys.KILL_SWITCH) is None


def test_promotion_is_four_eyes_and_s10_gets_the_stored_request(gw, r):
    from chimera.handlers.config import service
    from chimera.store.collections import CONFIG_BUNDLES

    assert gw.post("/v1/promote", json={"bundle_id": "nope", "rev": 1}, headers=gw.h["risk"]).status_code == 404
    gw.store.upsert(CONFIG_BUNDLES, service.key("b-test", 3), {"bundle_id": "b-test", "rev": 3, "status": "DRAFT"})
    req = gw.post("/v1/promote", json={"bundle_id": "b-test", "rev": 3}, headers=gw.h["risk"])
    assert req.status_code == 202 and r.xlen(keys.CFG_COMMANDS) == 0, req.text
    aid = req.json()["approval_id"]
    assert gw.post(f"/v1/approvals/{aid}/approve", headers=gw.h["risk"]).json()["error"] == "SAME_PERSON"
    assert gw.post(f"/v1/approvals/{aid}/approve", headers=gw.h["admin"]).json()["status"] == "EXECUTED"
    [env] = [decode(f) for _, f in r.xrange(keys.CFG_COMMANDS)]
    p = env.payload
    assert (p.promotion_id, p.bundle_id, p.rev, p.requested_by, p.approved_by) == (
        req.json()["promotion_id"], "b-test", 3, "risk", "admin")
