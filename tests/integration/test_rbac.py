"""RBAC: every route of the app's route table has a guard, and every route x role answers as written here.

EXPECTED is written by hand (not derived from rbac.PERMISSIONS): a new route fails
``test_every_route_is_in_the_matrix`` until someone decides who may call it.
"""

from __future__ import annotations

import re

import pytest
from litestar.testing import TestClient

from chimera.gateway.audit import verify
from chimera.gateway.rbac import PERMISSIONS, PUBLIC, SELF, UNSAFE
from chimera.store.collections import AUDIT_LOG
from tests.support.gateway import bearer, gateway_app

V, T, R, A = "viewer", "trader", "risk", "admin"
ALL = {V, T, R, A}
OPS = {T, R, A}
RISK = {R, A}
ANYONE = "anyone"  # no sign-in needed

EXPECTED: dict[tuple[str, str], set[str] | str] = {
    ("GET", "/v1/orders"): ALL, ("POST", "/v1/orders"): {T, A}, ("GET", "/v1/orders/{intent_id:str}"): ALL,
    ("POST", "/v1/cancel"): {T, A}, ("GET", "/v1/positions"): ALL, ("GET", "/v1/signals"): ALL,
    ("GET", "/v1/accounts"): ALL, ("GET", "/v1/ops/metrics"): ALL, ("GET", "/v1/ops/health"): ALL,
    ("POST", "/v1/kill-switch"): OPS, ("POST", "/v1/reconcile"): OPS,
    ("GET", "/v1/reconcile/{run_id:str}"): ALL, ("POST", "/v1/treasury/transfer"): RISK,
    ("POST", "/v1/xchg/treasury/transfer"): RISK, ("GET", "/v1/health"): ANYONE, ("GET", "/v1/ready"): ANYONE,
    ("GET", "/v1/metrics"): ANYONE, ("POST", "/v1/auth/login"): ANYONE, ("POST", "/v1/auth/refresh"): ANYONE,
    ("POST", "/v1/auth/logout"): ALL, ("POST", "/v1/auth/password"): ALL, ("GET", "/v1/auth/me"): ALL, ("POST", "/v1/decide"): {T, A},
    ("POST", "/v1/features/recompute"): OPS, ("POST", "/v1/positions/manage"): OPS,
    ("POST", "/v1/auto-transfer/trigger"): OPS, ("POST", "/v1/labels/backfill"): OPS,
    ("POST", "/v1/autopsy/{trade_id:str}"): OPS, ("GET", "/v1/autopsy/{trade_id:str}"): ALL,
    ("GET", "/v1/experiments/{experiment_id:str}"): ALL, ("POST", "/v1/experiments/run"): OPS,
    ("GET", "/v1/bundles"): ALL, ("POST", "/v1/bundles"): RISK, ("POST", "/v1/simulate"): RISK,
    ("POST", "/v1/promote"): RISK, ("GET", "/v1/backtests"): ALL, ("GET", "/v1/experiments"): ALL,
    ("GET", "/v1/autopsies"): ALL, ("GET", "/v1/fills"): ALL, ("GET", "/v1/labels"): ALL,
    ("GET", "/v1/alerts"): ALL, ("POST", "/v1/alerts/{key:str}/ack"): OPS,
    ("POST", "/v1/alerts/{key:str}/resolve"): OPS, ("GET", "/v1/active"): ALL, ("GET", "/v1/config"): OPS,
    ("GET", "/v1/approvals"): ALL, ("GET", "/v1/approvals/{approval_id:str}"): ALL,
    ("POST", "/v1/approvals/{approval_id:str}/approve"): RISK,
    ("POST", "/v1/approvals/{approval_id:str}/reject"): RISK, ("GET", "/v1/dlq"): RISK,
    ("POST", "/v1/dlq/{entry_id:str}/requeue"): {A},
    ("GET", "/v1/simulations/{simulation_id:str}"): ALL, ("GET", "/v1/backtests/{run_id:str}"): ALL,
    ("GET", "/v1/backtests/{run_id:str}/trades"): ALL, ("GET", "/v1/ops/traces/{key:str}"): ALL,
    ("GET", "/v1/account-snapshots"): ALL, ("GET", "/v1/breakers"): ALL,
    # web UI
    ("GET", "/"): ANYONE, ("GET", "/ui/login"): ANYONE, ("POST", "/ui/login"): ANYONE,
    ("GET", "/ui/static/{file_path:path}"): ANYONE, ("POST", "/ui/logout"): ALL, ("GET", "/ui"): ALL,
    ("GET", "/ui/positions"): ALL, ("GET", "/ui/orders"): ALL, ("GET", "/ui/signals"): ALL,
    ("GET", "/ui/approvals"): ALL, ("GET", "/ui/accounts"): ALL, ("GET", "/ui/ops"): ALL, ("GET", "/ui/alerts"): ALL,
    ("GET", "/ui/dlq"): RISK, ("GET", "/ui/bundles"): ALL, ("GET", "/ui/backtests"): ALL,
    ("GET", "/ui/experiments"): ALL, ("GET", "/ui/autopsy"): ALL, ("GET", "/ui/events"): ALL,
    ("POST", "/ui/kill-switch"): OPS, ("POST", "/ui/transfer"): RISK,
    ("POST", "/ui/approvals/{approval_id:str}/approve"): RISK,
    ("POST", "/ui/approvals/{approval_id:str}/reject"): RISK, ("POST", "/ui/dlq/{entry_id:str}/requeue"): {A},
}
LOGINS = ("/v1/auth/login", "/v1/auth/refresh", "/ui/login")  # public by nature: they create the session


def app_routes(app):
    """(method, path, handler) for every handler in the route table (OPTIONS and the OpenAPI pages aside)."""
    for route in app.routes:
        for h in getattr(route, "route_handlers", []):
            for m in sorted(h.http_methods - {"OPTIONS", "HEAD"}):
                if route.path.startswith("/schema"):
                    continue
                yield m, route.path, h


@pytest.fixture
def gw(r, settings):
    app, store = gateway_app(settings, r)
    with TestClient(app) as c:
        c.store = store
        c.tokens = {role: bearer(c, role) for role in (V, T, R, A)}
        yield c


def test_every_state_changing_route_is_guarded_and_audited(gw):
    """Walks the route table: no handler without a known permission; no state-changing handler public."""
    bad = []
    for method, path, h in app_routes(gw.app):
        perm = h.opt.get("perm")
        if h.opt.get("redirect"):  # the pre-/v1 paths only answer 307 to their guarded twin
            continue
        if perm not in PERMISSIONS and perm not in (PUBLIC, SELF):
            bad.append(f"{method} {path}: no permission")
        elif method in UNSAFE and perm == PUBLIC and path not in LOGINS:
            bad.append(f"{method} {path}: state-changing route without a guard")
    assert not bad, bad
    # ... and each state-changing call leaves an audit entry (checked over the whole matrix below too).
    before = gw.store.count(AUDIT_LOG)
    gw.post("/v1/reconcile", json={"scope": "ALL"}, headers=gw.tokens[T])
    [last] = gw.store.query(AUDIT_LOG, order_by="seq", desc=True, limit=1)
    assert gw.store.count(AUDIT_LOG) == before + 1
    assert (last["actor"], last["role"], last["action"], last["detail"]["status"]) == (T, T, "reconcile.run", 202)


def test_every_route_is_in_the_matrix(gw):
    seen = {(m, p) for m, p, h in app_routes(gw.app) if not h.opt.get("redirect")}
    assert seen == set(EXPECTED), {"missing from EXPECTED": seen - set(EXPECTED), "gone": set(EXPECTED) - seen}


def concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+:(str|path)\}", "zz-unknown", path)


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_rbac_matrix_every_route_by_every_role(gw):
    """Allowed roles never get 403 FORBIDDEN; the others always do; nobody signed in gets 401."""
    wrong = []
    audited_before = gw.store.count(AUDIT_LOG)
    unsafe_calls = 0
    for (method, path), allowed in sorted(EXPECTED.items()):
        url = concrete(path)
        body = {} if method == "POST" else None
        anon = gw.request(method, url, json=body, follow_redirects=False)
        if allowed == ANYONE:
            if anon.status_code in (401, 403) and path not in LOGINS:  # a login refuses bad credentials
                wrong.append(f"{method} {path} anonymous got {anon.status_code}")
            continue
        # The API answers 401; a UI page sends the browser to the login page instead.
        if anon.status_code != 401 and not (path.startswith("/ui") and anon.status_code in (302, 303)):
            wrong.append(f"{method} {path} anonymous got {anon.status_code}, want 401")
        for role, hdr in gw.tokens.items():
            if path == "/v1/auth/logout":  # revokes the session: use a throw-away one
                hdr = bearer(gw, role)
            resp = gw.request(method, url, json=body, headers=hdr, follow_redirects=False)
            if resp.status_code >= 500 and resp.status_code not in (501, 503):
                wrong.append(f"{method} {path} as {role}: server error {resp.status_code} {resp.text[:200]}")
            # JSON {"error": "FORBIDDEN"} from the API, an HTML page naming FORBIDDEN from the UI
            forbidden = resp.status_code == 403 and "FORBIDDEN" in resp.text
            if forbidden == (role in allowed):
                wrong.append(f"{method} {path} as {role}: {resp.status_code} {resp.text[:120]}")
            if method in UNSAFE and role in allowed:
                unsafe_calls += 1
    assert not wrong, "\n".join(wrong)
    # Every allowed state-changing call was audited (logout revokes the session, so it comes last per role).
    assert gw.store.count(AUDIT_LOG) - audited_before >= unsafe_calls
    assert verify(gw.store)[0]
