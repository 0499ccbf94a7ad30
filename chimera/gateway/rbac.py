"""Who may do what: ONE permission table, one guard, one audit hook.

Every route handler names its permission in ``opt={"perm": ...}``; the app-wide ``guard``
authenticates the caller (Bearer JWT / service token, or the UI's session cookie plus its CSRF
header), checks the table, applies the per-user rate limit and, for a state-changing method, marks
the request for the audit hook. ``audit_middleware`` appends one hash-chained ``audit_log`` entry
per such request after it answered, with its status. ``tests/integration/test_rbac.py`` walks the
route table: a handler without a known permission, or a state-changing one that is ``public``,
fails it.
"""

from __future__ import annotations

import anyio
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from chimera.gateway import audit
from chimera.gateway.auth import ROLES
from chimera.gateway.errors import ApiError

PUBLIC = "public"  # no caller needed (health, login, schema, static files)
SELF = "self"  # any signed-in caller (whoami, logout)
OPENAPI_PREFIX = "/schema"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_ALL = frozenset(ROLES)
_OPS = frozenset({"trader", "risk", "admin"})
_RISK = frozenset({"risk", "admin"})
_ADMIN = frozenset({"admin"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "read": _ALL,  # positions, orders, fills, signals, accounts, alerts, approvals list, research reads
    "ops.read": _ALL,  # /v1/ops/metrics, /v1/ops/health (read-only figures, no secrets)
    "orders.write": frozenset({"trader", "admin"}),  # POST /orders, /cancel
    "strategy.decide": frozenset({"trader", "admin"}),
    "features.recompute": _OPS,
    "positions.manage": _OPS,
    "reconcile.run": _OPS,
    "killswitch.set": _OPS,  # pulling the brake is never four-eyes
    "killswitch.lift": _RISK,  # stored as an approval request
    "treasury.request": _RISK,  # stored as an approval request
    "approvals.decide": _RISK,  # approve / reject someone else's request
    "research.run": _OPS,
    "alerts.handle": _OPS,  # acknowledge / resolve S11's alerts  # labels backfill, autopsy, experiments
    "config.read": _OPS,
    "config.write": _RISK,  # bundles, simulate
    "config.promote": _RISK,  # stored as an approval request
    "dlq.read": _RISK,
    "dlq.requeue": _ADMIN,
    "users.admin": _ADMIN,
}


def allowed(role: str, perm: str) -> bool:
    return perm in (PUBLIC, SELF) or role in PERMISSIONS.get(perm, ())


async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    perm = handler.opt.get("perm")
    if perm is None and (connection.scope["path"].startswith(OPENAPI_PREFIX)
                         or connection.scope.get("method") == "OPTIONS"):
        return  # Litestar's own OpenAPI pages and its automatic OPTIONS answers: public, read-only
    if perm is None or (perm not in PERMISSIONS and perm not in (PUBLIC, SELF)):
        raise ApiError(500, "ROUTE_WITHOUT_PERMISSION", f"route {handler.handler_name} names no known permission")
    if perm == PUBLIC:
        return
    gw = connection.app.state.chimera
    bearer = connection.headers.get("authorization", "")
    bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
    cookie = connection.cookies.get("chimera_session")
    p = await anyio.to_thread.run_sync(gw.auth.authenticate, bearer, cookie)
    method = connection.scope.get("method", "GET")
    if p.via_cookie and method in UNSAFE and connection.headers.get("x-csrf-token") != gw.auth.csrf_token(p):
        raise ApiError(403, "CSRF_FAILED", "missing or wrong X-CSRF-Token for a cookie session: reload the page")
    if not allowed(p.role, perm):
        raise ApiError(403, "FORBIDDEN", f"role {p.role!r} may not {perm} (allowed: {', '.join(sorted(PERMISSIONS[perm]))})")
    await anyio.to_thread.run_sync(gw.auth.check_rate, p)
    state = connection.scope.setdefault("state", {})
    state["principal"] = p
    if method in UNSAFE:
        state["audit"] = perm


def principal(request):
    p = request.scope.get("state", {}).get("principal")
    if p is None:
        raise ApiError(401, "UNAUTHENTICATED", "this route needs a signed-in caller")
    return p


def audit_middleware(app):
    """Append the audit entry once the response status is known (also for refusals after the guard)."""

    async def mw(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            state = scope.get("state") or {}
            if state.get("audit"):
                gw = scope["app"].state.chimera
                p = state["principal"]
                detail = {"method": scope["method"], "path": scope["path"], "status": status["code"],
                          **state.get("audit_detail", {})}
                await anyio.to_thread.run_sync(lambda: audit.append(
                    gw.store, actor=p.name, role=p.role, action=state["audit"], at_ms=gw.clock.now_ms(),
                    detail=detail))

    return mw
