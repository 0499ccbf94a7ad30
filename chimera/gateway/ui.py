"""S12 web UI: server-rendered pages (Jinja), htmx for the forms, Server-Sent Events for live rows.

Pages read the store and Redis like the /v1 readers; actions call the same functions as the API
(``routes.set_or_request_lift``, ``routes.request_transfer``, ``approvals.decide``) so a click and
a curl do the same thing, under the same guard, the same audit and the same four eyes. The session
is the access JWT in an HttpOnly, SameSite=Strict cookie; every state-changing request also carries
``X-CSRF-Token`` (htmx sends it from ``<body hx-headers>``), which a page of another site cannot
know. Live updates: ``/ui/events?topic=...`` reads one Redis stream with XREAD and sends each entry
as an SSE event whose id is the stream entry id, so a reconnecting browser resumes from
``Last-Event-ID``. htmx is vendored in ``static/`` (no CDN, no Node build).
"""

from __future__ import annotations

import html
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import anyio
from litestar import MediaType, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from chimera.gateway import approvals, ops
from chimera.gateway.errors import ApiError
from chimera.gateway.rbac import PUBLIC, SELF, principal
from chimera.gateway.routes import accounts_status, request_transfer, set_or_request_lift
from chimera.gateway.v1 import dlq_items
from chimera.risk.state import RedisState
from chimera.schemas.envelope import decode
from chimera.schemas.messages import AccountStreamStatus, VenueReport
from chimera.store import collections as C
from chimera.streams import keys

HERE = Path(__file__).parent
COOKIE = "chimera_session"
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
NAV = [("/ui", "Dashboard"), ("/ui/positions", "Positions"), ("/ui/orders", "Orders & fills"),
       ("/ui/signals", "Signals"), ("/ui/approvals", "Approvals"), ("/ui/accounts", "Accounts"), ("/ui/ops", "Ops"),
       ("/ui/alerts", "Alerts"), ("/ui/dlq", "DLQ"), ("/ui/bundles", "Bundles & rollouts"),
       ("/ui/backtests", "Backtests"), ("/ui/experiments", "Experiments"), ("/ui/autopsy", "Autopsy")]
TOPICS = {"fills": keys.VENUE_REPORTS, "positions": keys.POS_EVENTS, "signals": keys.SIG_EVENTS,
          "alerts": keys.ALERTS, "ops": keys.OPS_EVENTS, "accounts": keys.OPS_EVENTS}
PLACEHOLDERS = {  # the services exist; their pages do not yet (the API does)
    "bundles": ("Bundles & rollouts", "S10's bundles and rollouts", "GET /v1/bundles, POST /v1/bundles, /v1/promote"),
    "backtests": ("Backtests", "S9's backtest runs", "GET /v1/backtests"),
    "experiments": ("Experiments", "S9's experiments", "GET /v1/experiments, POST /v1/experiments/run"),
    "autopsy": ("Autopsy reports", "S8's autopsy reports", "GET /v1/autopsies, /v1/autopsy/{trade_id}"),
}


def template_config() -> TemplateConfig:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def ui_kw(perm: str, **kw) -> dict:
    out = {"opt": {"perm": perm, **kw.pop("opt", {})}, "include_in_schema": False, "sync_to_thread": True, **kw}
    return {k: v for k, v in out.items() if v is not None}  # sync_to_thread=None: an async handler


def _deps(request: Request):
    return request.app.state.chimera


def page(request: Request, title: str, template: str = "page.html", status: int = 200, **ctx) -> Template:
    d = _deps(request)
    p = request.scope.get("state", {}).get("principal")
    context = {"title": title, "user": p, "nav": NAV, "path": request.url.path,
               "csrf": d.auth.csrf_token(p) if p else "", "cards": [], "forms": [], "tables": [], **ctx}
    return Template(template_name=template, context=context, status_code=status)


def last_id(r, stream: str) -> str:
    got = r.xrevrange(stream, count=1)
    return got[0][0].decode() if got else "0-0"


def _s(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def flash(text: str, kind: str = "ok", status: int = 200, refresh: bool = True) -> Response:
    headers = {"HX-Trigger": "refresh"} if refresh else {}
    return Response(f'<div class="flash {kind}">{html.escape(text)}</div>', media_type=MediaType.HTML,
                    status_code=status, headers=headers)


# --- errors: the UI's face of ApiError ---------------------------------------------------------------


def error_handler(api_handler):
    def handle(request: Request, exc: ApiError) -> Response:
        if not request.url.path.startswith("/ui"):
            return api_handler(request, exc)
        if exc.status_code == 401:
            if request.headers.get("hx-request"):
                return Response("", status_code=401, headers={"HX-Redirect": "/ui/login"})
            return Redirect("/ui/login")
        text = f"{exc.code}: {exc.detail}"
        if request.headers.get("hx-request"):
            return flash(text, "error", exc.status_code, refresh=False)
        title = "Not allowed" if exc.status_code == 403 else "Error"
        return page(request, title, status=exc.status_code, flash=text, flash_kind="error")

    return handle


# --- sign-in -----------------------------------------------------------------------------------------


@get("/", **ui_kw(PUBLIC, sync_to_thread=False))
def root() -> Redirect:
    return Redirect("/ui")


@get("/ui/login", **ui_kw(PUBLIC, sync_to_thread=False))
def login_page(request: Request) -> Template:
    return page(request, "Sign in", "login.html")


@post("/ui/login", **ui_kw(PUBLIC, opt={"form": True}))
def login_submit(request: Request, data: Form) -> Response:
    d = _deps(request)
    try:
        tok = d.auth.login(data.get("username", ""), data.get("password", ""))
    except ApiError as exc:
        return page(request, "Sign in", "login.html", status=exc.status_code, flash=exc.detail, flash_kind="error")
    resp = Redirect("/ui")
    resp.set_cookie(COOKIE, tok["access_token"], httponly=True, samesite="strict", secure=d.auth.cfg.cookie_secure,
                    max_age=d.auth.cfg.access_ttl_s, path="/")
    return resp


@post("/ui/logout", **ui_kw(SELF))
def logout(request: Request) -> Response:
    d = _deps(request)
    p = principal(request)
    _, claims = d.auth.decode(request.cookies.get(COOKIE, ""))
    d.auth.revoke(p, family=claims.get("fam", ""))
    resp = Response("", status_code=200, headers={"HX-Redirect": "/ui/login"})
    resp.delete_cookie(COOKIE, path="/")
    return resp


# --- pages ---------------------------------------------------------------------------------------------


def _day_start(now_ms: int) -> int:
    return now_ms - now_ms % 86_400_000


def _dec(value) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


@get("/ui", **ui_kw("read"))
def dashboard(request: Request) -> Template:
    d = _deps(request)
    state = RedisState(d.r)
    health = state.health() or "UNKNOWN"
    ks = state.kill_switch()
    ks_text = f"{ks.mode} by {ks.set_by} ({ks.reason}), {max(0, d.r.pttl(keys.KILL_SWITCH)) // 1000}s left" if ks else "OFF"
    closed = d.store.query(C.POSITIONS, {"state": "CLOSED", "closed_at": (">=", _day_start(d.clock.now_ms()))})
    pnl = sum((_dec(p.get("realized_pnl")) - _dec(p.get("fees")) for p in closed), Decimal(0))
    open_pos = d.store.query(C.POSITIONS, {"state": ("in", ["ACTIVE", "PENDING_CLOSING"])})
    exposure = sum((_dec(p.get("qty")) * _dec(p.get("mark") or p.get("entry_price")) for p in open_pos), Decimal(0))
    cards = [{"id": "health", "label": "Health", "value": health, "css": health},
             {"id": "pnl", "label": "PnL today (USDT, net of fees)", "value": f"{pnl:.2f}"},
             {"id": "exposure", "label": f"Exposure ({len(open_pos)} open)", "value": f"{exposure:.2f}"},
             {"id": "killswitch", "label": "Kill switch", "value": ks_text, "css": "danger" if ks else ""}]
    forms = [{"id": "killswitch", "title": "Kill switch", "action": "/ui/kill-switch", "button": "Apply",
              "fields": [{"name": "mode", "label": "mode", "options": ["HALT_NEW", "REDUCE_ONLY", "FLATTEN", "OFF"]},
                         {"name": "reason", "label": "reason", "required": True},
                         {"name": "ttl_s", "label": "TTL s", "value": "3600"}]}]
    return page(request, "Dashboard", cards=cards, forms=forms, live="ops", after=last_id(d.r, keys.OPS_EVENTS),
                note="Setting the switch acts at once; OFF asks a second person (Approvals).")


@get("/ui/positions", **ui_kw("read"))
def positions(request: Request) -> Template:
    d = _deps(request)
    rows = []
    for p in d.store.query(C.POSITIONS, {"state": ("in", ["ACTIVE", "PENDING_CLOSING", "PENDING_ENTRY"])}, limit=200):
        stop = (p.get("stop") or {}).get("price") or p.get("sl_price")
        tp = (p.get("take_profit") or {}).get("price") or p.get("tp_price")
        dist = p.get("liq_dist")
        rows.append({"_id": p.get("pos_id"), "position": p.get("pos_id"), "account": p.get("account_id", "main"),
                     "symbol": p.get("symbol"), "side": p.get("side"), "qty": _s(p.get("qty")),
                     "entry": _s(p.get("entry_price")), "mark": _s(p.get("mark")), "stop": _s(stop), "take-profit": _s(tp),
                     "liquidation": _s(p.get("liq_price")),
                     "to liquidation": f"{_dec(dist) * 100:.2f}%" if dist not in (None, "") else "",
                     "state": p.get("state")})
    cols = ["position", "account", "symbol", "side", "qty", "entry", "mark", "stop", "take-profit", "liquidation",
            "to liquidation", "state"]
    agg = [{"_id": f"all-{a['market']}-{a['symbol']}-{a['side']}", "market": a["market"], "symbol": a["symbol"],
            "side": a["side"], "qty": a["qty"], "entry (weighted)": _s(a["entry_price"]), "positions": a["positions"],
            "by account": ", ".join(f"{k}: {v}" for k, v in sorted(a["accounts"].items()))}
           for a in ops.aggregate_positions(d.store.query(C.POSITIONS, {"state": ("in", list(ops.OPEN_STATES))}))]
    vrows = [{"account": v["account_id"], "symbol": v["symbol"], "side": v["position_side"], "strategy": v["strategy"],
              "qty": _s(v["qty"]), "avg cost": _s(v["avg_cost"]), "realized PnL": _s(v["realized_pnl"]),
              "fills": v["fills"]} for v in ops.virtual_rows(d.store, None, None)["virtual"]]
    return page(request, "Open positions", live="positions", after=last_id(d.r, keys.POS_EVENTS), tables=[
        {"id": "positions", "title": "Open", "columns": cols, "rows": rows},
        {"id": "all-view", "title": "All accounts (read-only)", "rows": agg,
         "columns": ["market", "symbol", "side", "qty", "entry (weighted)", "positions", "by account"]},
        {"id": "virtual", "title": "Virtual positions per strategy", "rows": vrows,
         "columns": ["account", "symbol", "side", "strategy", "qty", "avg cost", "realized PnL", "fills"]}])


FILL_COLS = ["time", "account", "symbol", "side", "qty", "price", "order"]


def fill_row(f: dict) -> dict:
    return {"time": _s(f.get("ts")), "account": f.get("account_id", "main"), "symbol": f.get("symbol"),
            "side": f.get("side"), "qty": _s(f.get("qty")), "price": _s(f.get("price")),
            "order": f.get("client_order_id")}


@get("/ui/orders", **ui_kw("read"))
def orders(request: Request) -> Template:
    d = _deps(request)
    legs = d.store.query(C.ORDERS, order_by="created_at", desc=True, limit=100)
    order_rows = [{"order": o.get("client_order_id"), "intent": o.get("intent_id"), "symbol": o.get("symbol"),
                   "side": o.get("side"), "type": o.get("order_type", o.get("leg", "")), "qty": _s(o.get("qty")),
                   "filled": _s(o.get("filled_qty")), "avg price": _s(o.get("avg_price")), "status": o.get("status")}
                  for o in legs]
    fills = [fill_row(f) for f in d.store.query(C.FILLS, order_by="ts", desc=True, limit=100)]
    return page(request, "Orders and fills", live="fills", after=last_id(d.r, keys.VENUE_REPORTS), tables=[
        {"id": "fills", "title": "Fills (live)", "columns": FILL_COLS, "rows": fills},
        {"id": "orders", "title": "Orders", "columns": ["order", "intent", "symbol", "side", "type", "qty", "filled",
                                                        "avg price", "status"], "rows": order_rows}])


@get("/ui/signals", **ui_kw("read"))
def signals(request: Request) -> Template:
    d = _deps(request)
    rows = []
    for s in d.store.query(C.SIGNALS, order_by="t0", desc=True, limit=100):
        dec_ = s.get("decision") or {}
        reasons = dec_.get("reasons") or dec_.get("reason") or ""
        rows.append({"signal": s.get("signal_id"), "t0": _s(s.get("t0")), "symbol": s.get("symbol"),
                     "decision": dec_.get("action", "pending"), "side": dec_.get("side") or "",
                     "reasons": ", ".join(reasons) if isinstance(reasons, list) else reasons,
                     "model p": _s(dec_.get("model_p"))})
    return page(request, "Signals", live="signals", after=last_id(d.r, keys.SIG_EVENTS), tables=[
        {"id": "signals", "title": "Latest decisions", "rows": rows,
         "columns": ["signal", "t0", "symbol", "decision", "side", "reasons", "model p"]}])


@get("/ui/approvals", **ui_kw("read"))
def approvals_page(request: Request) -> Template:
    d = _deps(request)
    p = principal(request)
    rows = []
    for a in approvals.listing(d, None, 100):
        req = a["request"]
        what = (f"{req.get('amount')} {req.get('asset')} {req.get('direction')}" if a["kind"] == "TREASURY_TRANSFER"
                else req.get("reason", ""))
        row = {"_id": a["approval_id"], "id": a["approval_id"], "kind": a["kind"], "what": what,
               "requested by": a["requested_by"], "status": a["status"], "decided by": a.get("decided_by", ""),
               "result": a.get("result", "")}
        if a["status"] == "PENDING" and p.role in ("risk", "admin") and p.name != a["requested_by"]:
            row["_actions"] = [("approve", f"/ui/approvals/{a['approval_id']}/approve"),
                               ("reject", f"/ui/approvals/{a['approval_id']}/reject")]
        rows.append(row)
    forms = [{"id": "transfer", "title": "Request a transfer", "action": "/ui/transfer", "button": "Request",
              "fields": [{"name": "asset", "label": "asset", "value": "USDT"},
                         {"name": "amount", "label": "amount", "required": True},
                         {"name": "direction", "label": "direction", "options": ["MAIN_UMFUTURE", "UMFUTURE_MAIN"]},
                         {"name": "reason", "label": "reason"}]}]
    return page(request, "Approvals", forms=forms, tables=[
        {"id": "approvals", "title": "Inbox", "actions": True, "rows": rows,
         "columns": ["id", "kind", "what", "requested by", "status", "decided by", "result"]}],
        note="Four eyes: a request runs only when another person approves it, before it expires.")


ACCOUNT_COLS = ["account", "enabled", "stream", "markets", "last connected", "last error"]


def account_row(a: dict) -> dict:
    return {"_id": f"acct-{a['account_id']}", "account": a["account_id"], "enabled": a["enabled"],
            "stream": a["ws_status"], "markets": ", ".join(f"{m}: {v['ws_status']}" for m, v in a["markets"].items()),
            "last connected": _s(a["last_connected_at"] or ""), "last error": a["last_error"]}


def account_row_html(a: dict) -> dict:
    """The accounts page's row for ``a`` (same cells as page.html renders), for a live replacement."""
    row = account_row(a)
    cells = "".join(f"<td>{html.escape(_s(row[c]))}</td>" for c in ACCOUNT_COLS)
    return {"id": f"row-{row['_id']}", "html": f'<tr id="row-{row["_id"]}" class="live">{cells}</tr>'}


@get("/ui/accounts", **ui_kw("read"))
def accounts(request: Request) -> Template:
    d = _deps(request)
    rows = [account_row(a) for a in accounts_status(d)]
    return page(request, "Accounts", live="accounts", after=last_id(d.r, keys.OPS_EVENTS), tables=[
        {"id": "accounts", "title": "Accounts and their streams", "rows": rows, "columns": ACCOUNT_COLS}],
        note="Live: each stream status change S1 reports replaces its account's row.")


@get("/ui/ops", **ui_kw("ops.read"))
def ops_page(request: Request) -> Template:
    """/v1/ops/health and /v1/ops/metrics (last hour) as a page; it refreshes on every ops event."""
    d = _deps(request)
    health = ops.ops_health(d)
    m = ops.ops_metrics(d, None, 3600)
    css = {"OK": "GREEN", "DEGRADED": "ORANGE", "FAIL": "RED"}
    cards = [{"id": "ops-status", "label": "System", "value": health["status"], "css": css[health["status"]]},
             {"id": "ops-uptime", "label": "Gateway uptime (s)", "value": health["uptime_sec"]},
             {"id": "ops-alerts", "label": "Ops alerts (last hour)", "value": len(m["alerts"])}]

    def dist(x, key):
        return _s((x or {}).get(key)) if x else ""

    accounts_rows = [{"_id": f"ops-{acc}", "account": acc, "stream": x["ws_status"], "orders": x["orders"],
                      "rejects": x["rejects"], "fills": x["fills"], "notional": x["notional_usdt"],
                      "slippage p95 (bps)": dist(x["slippage_bps"], "p95"),
                      "latency p95 (ms)": dist(x["latency_ms"], "p95"), "backlog": x["stream_lag"]}
                     for acc, x in m["by_account"].items()]
    checks = [{"_id": f"check-{c['name'].replace(':', '-').replace('{', '').replace('}', '')}", "check": c["name"],
               "status": c["status"], "detail": c["detail"]} for c in health["checks"]]
    alerts_rows = [{"account": a["account_id"] or "", "code": a["code"], "message": a["message"]} for a in m["alerts"]]
    return page(request, "Operations", cards=cards, live="ops", after=last_id(d.r, keys.OPS_EVENTS), tables=[
        {"id": "ops-accounts", "title": "Per account, last hour", "rows": accounts_rows,
         "columns": ["account", "stream", "orders", "rejects", "fills", "notional", "slippage p95 (bps)",
                     "latency p95 (ms)", "backlog"]},
        {"id": "ops-alerts", "title": "Alerts", "rows": alerts_rows, "columns": ["account", "code", "message"]},
        {"id": "ops-checks", "title": "Health checks", "rows": checks, "columns": ["check", "status", "detail"]}],
        note="The same figures as GET /v1/ops/health and GET /v1/ops/metrics?window_sec=3600.")


@get("/ui/alerts", **ui_kw("read"))
def alerts(request: Request) -> Template:
    d = _deps(request)
    rows = [{"level": a.get("level"), "code": a.get("code"), "message": a.get("message"), "status": a.get("status", ""),
             "at": _s(a.get("ts") or a.get("created_at") or a.get("at"))} for a in d.store.query(C.ALERTS, limit=200)]
    return page(request, "Alerts", live="alerts", after=last_id(d.r, keys.ALERTS), tables=[
        {"id": "alerts", "title": "Alerts", "rows": rows, "columns": ["level", "code", "message", "status", "at"]}])


@get("/ui/dlq", **ui_kw("dlq.read"))
def dlq(request: Request) -> Template:
    d = _deps(request)
    p = principal(request)
    rows = []
    for x in dlq_items(d.r, 200):
        row = {"_id": x["id"].replace("-", "_"), **{k: _s(v) for k, v in x.items()}}
        if p.role == "admin":
            row["_actions"] = [("requeue", f"/ui/dlq/{x['id']}/requeue")]
        rows.append(row)
    return page(request, "Dead letters", tables=[{"id": "dlq", "title": "dlq:{dead}", "actions": True, "rows": rows,
                                                  "columns": ["id", "stream", "group", "entry_id", "reason",
                                                              "attempts", "failed_at"]}])


def _placeholder(slug: str):
    title, what, api = PLACEHOLDERS[slug]

    def handler(request: Request) -> Template:
        return page(request, title, note=f"Not built yet: this page will show {what}. Until then use the API: "
                                          f"{api}. Nothing here is simulated.")

    handler.__name__ = f"placeholder_{slug}"
    return get(f"/ui/{slug}", name=f"ui_{slug}", **ui_kw("read"))(handler)


# --- actions (htmx, X-CSRF-Token) ----------------------------------------------------------------------


@post("/ui/kill-switch", **ui_kw("killswitch.set", opt={"form": True}))
def ui_kill_switch(request: Request, data: Form) -> Response:
    mode = data.get("mode", "")
    reason = data.get("reason", "").strip()
    if mode not in ("HALT_NEW", "REDUCE_ONLY", "FLATTEN", "OFF"):
        raise ApiError(400, "INVALID_REQUEST", f"mode {mode!r} is not a kill-switch mode", field="mode")
    if not reason:
        raise ApiError(400, "INVALID_REQUEST", "a reason is required", field="reason")
    try:
        ttl = int(data.get("ttl_s") or 3600)
    except ValueError:
        raise ApiError(400, "INVALID_REQUEST", "ttl_s must be whole seconds", field="ttl_s") from None
    if not 0 < ttl <= 7 * 24 * 3600:
        raise ApiError(400, "INVALID_REQUEST", "ttl_s must be in 1..604800", field="ttl_s")
    out = set_or_request_lift(_deps(request), principal(request), mode, reason, ttl)
    request.scope["state"]["audit_detail"] = {"mode": mode, "reason": reason, "approval_id": out.get("approval_id", "")}
    if out.get("approval_id"):
        return flash(f"Lift requested: approval {out['approval_id']} waits for a second person")
    return flash(f"Kill switch {mode} set for {ttl}s")


@post("/ui/transfer", **ui_kw("treasury.request", opt={"form": True}))
def ui_transfer(request: Request, data: Form) -> Response:
    amount = data.get("amount", "").strip()
    try:
        ok = Decimal(amount) > 0 and Decimal(amount).is_finite()
    except InvalidOperation:
        ok = False
    if not ok:
        raise ApiError(400, "INVALID_REQUEST", f"amount {amount!r} must be a positive decimal", field="amount")
    direction = data.get("direction", "")
    if direction not in ("MAIN_UMFUTURE", "UMFUTURE_MAIN"):
        raise ApiError(400, "INVALID_REQUEST", f"direction {direction!r} is not allowed", field="direction")
    asset = data.get("asset", "USDT").strip().upper()
    if not asset.isalnum():
        raise ApiError(400, "INVALID_REQUEST", "asset must be letters and digits", field="asset")
    out = request_transfer(_deps(request), principal(request), asset, amount, direction, data.get("reason", ""), None)
    request.scope["state"]["audit_detail"] = out
    return flash(f"Transfer {out['transfer_id']} requested: approval {out['approval_id']} waits for a second person")


def _decide(request: Request, approval_id: str, approve: bool) -> Response:
    request.scope["state"]["audit_detail"] = {"approval_id": approval_id, "decision": "approve" if approve else "reject"}
    doc = approvals.decide(_deps(request), approval_id, principal(request), approve)
    return flash(f"{approval_id}: {doc['status']}" + (f" ({doc['result']})" if doc.get("result") else ""))


@post("/ui/approvals/{approval_id:str}/approve", **ui_kw("approvals.decide"))
def ui_approve(request: Request, approval_id: str) -> Response:
    return _decide(request, approval_id, True)


@post("/ui/approvals/{approval_id:str}/reject", **ui_kw("approvals.decide"))
def ui_reject(request: Request, approval_id: str) -> Response:
    return _decide(request, approval_id, False)


@post("/ui/dlq/{entry_id:str}/requeue", **ui_kw("dlq.requeue"))
def ui_requeue(request: Request, entry_id: str) -> Response:
    from chimera.ops.streams_admin import dlq_requeue

    try:
        new_id = dlq_requeue(_deps(request).r, entry_id)
    except Exception as exc:  # noqa: BLE001 - unknown or malformed id
        raise ApiError(404, "NOT_FOUND", f"dead letter {entry_id!r}: {exc or 'unknown'}") from None
    request.scope["state"]["audit_detail"] = {"dlq_id": entry_id, "requeued_as": new_id}
    return flash(f"{entry_id} requeued as {new_id}")


# --- live: Server-Sent Events from the streams ----------------------------------------------------------


STATE_SNAPSHOT = "STATE_SNAPSHOT"  # seed 000: the first event of every live connection
ACCOUNT_STREAM_STATUS = "ACCOUNT_STREAM_STATUS"  # seed 000: one account stream's status changed


def snapshot(d, topic: str) -> str:
    """``STATE_SNAPSHOT``: every account's stream status now (and, for the accounts page, its rows)."""
    status = accounts_status(d)
    body: dict[str, Any] = {"topic": topic, "accounts_status": status}
    if topic == "accounts":
        body["rows"] = [account_row_html(a) for a in status]
    return json.dumps(body)


def account_event(d, env) -> str:
    """``ACCOUNT_STREAM_STATUS``: the change as S1 published it, plus the account as it stands now."""
    msg = env.payload
    now = {a["account_id"]: a for a in accounts_status(d)}.get(env.account_id)
    return json.dumps({"account_id": env.account_id, "market": msg.market, "ws_status": msg.ws_status,
                       "last_error": msg.last_error, "last_connected_at": msg.last_connected_at,
                       "at": env.event_time, "account": now, "row": account_row_html(now) if now else None})


def render_event(topic: str, fields: dict) -> tuple[str, Any] | None:
    """(event, data) for one stream entry; None when this page has nothing to show for it. For an
    account stream status the data is the envelope: ``account_event`` reads Redis to complete it."""
    try:
        env = decode(fields)
    except Exception:  # noqa: BLE001 - an entry this build cannot decode is skipped, never fatal
        return None
    msg = env.payload
    if isinstance(msg, AccountStreamStatus):
        return ACCOUNT_STREAM_STATUS, env
    if topic == "accounts":
        return None
    if topic == "fills":
        if not isinstance(msg, VenueReport) or msg.exec_type != "TRADE":
            return None
        row = fill_row({"ts": msg.ts, "account_id": env.account_id, "symbol": msg.symbol, "side": msg.side,
                        "qty": msg.last_qty, "price": msg.last_price, "client_order_id": msg.client_order_id})
        cells = "".join(f"<td>{html.escape(_s(row[c]))}</td>" for c in FILL_COLS)
        return "row", json.dumps({"target": "fills", "html": f'<tr class="live">{cells}</tr>'})
    return "refresh", env.type


def _read_after(r, stream: str, cursor: str):
    # Short blocks: a closed page frees its worker thread within half a second.
    return r.xread({stream: cursor}, count=100, block=500)


@get("/ui/events", **ui_kw("read", sync_to_thread=None))
async def events(request: Request, topic: str, after: str = "$") -> ServerSentEvent:
    stream = TOPICS.get(topic)
    if stream is None:
        raise ApiError(400, "INVALID_REQUEST", f"topic must be one of {', '.join(TOPICS)}", field="topic")
    d = _deps(request)
    start = request.headers.get("last-event-id") or after or "$"
    if start == "$":
        start = await anyio.to_thread.run_sync(last_id, d.r, stream)

    async def gen():
        cursor = start
        yield ServerSentEventMessage(comment="live", retry=1000)
        # No id: a reconnect resumes after the last stream entry, and gets a fresh snapshot first.
        yield ServerSentEventMessage(event=STATE_SNAPSHOT, data=await anyio.to_thread.run_sync(snapshot, d, topic))
        while True:
            got = await anyio.to_thread.run_sync(_read_after, d.r, stream, cursor, abandon_on_cancel=True)
            for _, entries in got or []:
                for eid, fields in entries:
                    cursor = eid.decode() if isinstance(eid, bytes) else eid
                    out = render_event(topic, fields)
                    if out is not None and out[0] == ACCOUNT_STREAM_STATUS:
                        out = (out[0], await anyio.to_thread.run_sync(account_event, d, out[1]))
                    if out is not None:
                        yield ServerSentEventMessage(event=out[0], data=out[1], id=cursor)

    return ServerSentEvent(gen())


STATIC = create_static_files_router(path="/ui/static", directories=[HERE / "static"], opt={"perm": PUBLIC},
                                    include_in_schema=False)

UI_ROUTES: list[Any] = [root, login_page, login_submit, logout, dashboard, positions, orders, signals, approvals_page,
                        accounts, ops_page, alerts, dlq, *(_placeholder(s) for s in PLACEHOLDERS), ui_kill_switch, ui_transfer,
                        ui_approve, ui_reject, ui_requeue, events, STATIC]
