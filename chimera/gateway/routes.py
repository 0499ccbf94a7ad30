"""S12 routes: thin producers (validate, XADD, 202 with the id to poll) and readers of the store.

No route calls a handler: commands go on the streams the workers consume (ARCHITECTURE §1).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post, route
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect
from litestar.status_codes import HTTP_202_ACCEPTED

from chimera.gateway import approvals
from chimera.gateway.errors import ApiError, error_responses, not_found
from chimera.gateway.ops import configured_accounts
from chimera.gateway.rbac import PUBLIC, principal
from chimera.handlers.strategy.killswitch import set_kill_switch
from chimera.risk.state import RedisState
from chimera.schemas.messages import (
    CancelOrder,
    ExecPolicy,
    OrderIntent,
    ProductMarket,
    Purpose,
    Reconcile,
    Side,
    SubmitOrder,
    TransferType,
)
from chimera.schemas.strategy import KillMode
from chimera.streams import keys

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9:_.-]+$")]
MAPPING_TTL_S = 30 * 24 * 3600
MAX_LIMIT = 500
Limit = Annotated[int, QueryParameter(name="limit", ge=1, le=MAX_LIMIT, description=f"1..{MAX_LIMIT}")]
# Money travels as decimal strings (never floats); the pattern only admits numbers > 0.
Positive = Annotated[str, msgspec.Meta(
    pattern=r"^([1-9][0-9]{0,11}(\.[0-9]{1,12})?|0\.[0-9]{0,11}[1-9][0-9]{0,11})$",
    description='decimal string > 0, e.g. "0.010" (at most 12 digits before and after the point)')]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[A-Z0-9]+$")]
Text = Annotated[str, msgspec.Meta(max_length=500)]


def spec(perm: str, *codes: int, unsafe: bool = False) -> dict:
    """Handler keywords: its permission (rbac.PERMISSIONS) and every error status it can answer, documented."""
    base = (400, 503) if perm == PUBLIC else (400, 401, 403, 429, 503)  # 503: Redis unavailable (errors.py)
    extra = (422,) if unsafe else ()
    out = {"opt": {"perm": perm}, "responses": error_responses(*sorted(set(base + extra + codes))),
           "sync_to_thread": True}
    if perm == PUBLIC:
        out["security"] = [{}]  # no credentials needed (overrides the document-wide bearer requirement)
    return out


def both(path: str) -> str:
    """The /v1 path of a route that also had an unversioned path (kept as a 307 redirect: LEGACY)."""
    return f"/v1{path}"


def audit_detail(request: Request, **detail) -> None:
    """Ids the audit entry of this request should carry (rbac.audit_middleware reads them)."""
    request.scope.setdefault("state", {}).setdefault("audit_detail", {}).update(detail)


def one_account(account_id: str | None) -> None:
    """"all" names the read-only All view, never an account to act on."""
    if account_id == "all":
        raise ApiError(422, "ALL_VIEW_READ_ONLY", 'account_id "all" is the read-only All view: name one account',
                       field="account_id")


def dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


# --- request bodies -----------------------------------------------------------------------------


class OrderBody(msgspec.Struct, forbid_unknown_fields=True):
    symbol: Symbol
    side: Side
    qty: Positive
    market: ProductMarket = "FUT"
    exec_policy: ExecPolicy = "MARKET"
    purpose: Purpose = "ENTRY"
    price: Positive | None = None
    stop_price: Positive | None = None
    tp_price: Positive | None = None
    sl_price: Positive | None = None
    reduce_only: bool = False
    leverage: Annotated[int, msgspec.Meta(ge=1, le=125)] = 20
    intent_id: Id | None = None
    account_id: Id = "main"


class CancelBody(msgspec.Struct, forbid_unknown_fields=True):
    intent_id: Id
    account_id: Id | None = None
    symbol: Annotated[str, msgspec.Meta(max_length=20, pattern=r"^[A-Z0-9]*$")] = ""
    client_order_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    market: ProductMarket = "FUT"
    reason: Text = ""


class KillSwitchBody(msgspec.Struct, forbid_unknown_fields=True):
    mode: KillMode | Literal["OFF"]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    ttl_s: Annotated[int, msgspec.Meta(gt=0, le=7 * 24 * 3600)] = 3600
    set_by: Text = ""  # ignored: the signed-in caller is who sets it (kept so old clients still validate)
    account_id: Id | None = None  # None: the global switch (every account); an id: that account's own switch


class ReconcileBody(msgspec.Struct, forbid_unknown_fields=True):
    scope: Literal["ALL", "ORDERS", "POSITIONS"] = "ALL"
    requested_by: Text = ""  # ignored: the signed-in caller
    account_id: Id = "main"


class TransferBody(msgspec.Struct, forbid_unknown_fields=True):
    asset: Annotated[str, msgspec.Meta(min_length=1, max_length=10, pattern=r"^[A-Z0-9]+$")]
    amount: Positive
    direction: TransferType
    transfer_id: Id | None = None
    requested_by: Text = ""  # ignored: the signed-in caller
    reason: Text = ""


# --- helpers --------------------------------------------------------------------------------------


def _deps(request: Request) -> Any:
    return request.app.state.chimera


def _where(**filters: str | None) -> dict:
    return {k: v for k, v in filters.items() if v}


# --- orders ---------------------------------------------------------------------------------------


@post(both("/orders"), status_code=HTTP_202_ACCEPTED, **spec("orders.write", unsafe=True))
def create_order(request: Request, data: JSONBody[OrderBody]) -> dict:
    d = _deps(request)
    one_account(data.account_id)
    intent_id = data.intent_id or f"gw-{uuid.uuid4().hex[:24]}"
    if data.exec_policy == "LIMIT" and data.price is None:
        raise ApiError(422, "RULE_VIOLATED", "exec_policy LIMIT needs price", field="price")
    if data.exec_policy == "STOP" and data.stop_price is None:
        raise ApiError(422, "RULE_VIOLATED", "exec_policy STOP needs stop_price", field="stop_price")
    intent = OrderIntent(
        intent_id=intent_id, market=data.market, symbol=data.symbol, side=data.side, qty=Decimal(data.qty),
        exec_policy=data.exec_policy, purpose=data.purpose, price=dec(data.price), stop_price=dec(data.stop_price),
        tp_price=dec(data.tp_price), sl_price=dec(data.sl_price), reduce_only=data.reduce_only,
        leverage=data.leverage)
    # The mapping first: a cancel right after the 202 must find the account.
    d.r.set(keys.gw_order_account(intent_id), data.account_id, ex=MAPPING_TTL_S)
    d.producer.publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), idempotency_key=intent_id,
                       account_id=data.account_id, correlation_id=f"user:{principal(request).name}")
    audit_detail(request, intent_id=intent_id, account_id=data.account_id, symbol=data.symbol, side=data.side,
                 qty=data.qty)
    return {"intent_id": intent_id, "status": "ACCEPTED_FOR_PROCESSING"}


@get(both("/orders/{intent_id:str}"), **spec("read", 404))
def get_order(request: Request, intent_id: FromPath[str]) -> dict:
    d = _deps(request)
    intent = d.store.get("order_intents", intent_id)
    legs = d.store.query("orders", {"intent_id": intent_id})
    if intent is None and not legs:
        account = d.r.get(keys.gw_order_account(intent_id))
        if account is None:
            raise not_found("order", intent_id)
        # Accepted by the gateway, not yet picked up by S4.
        return {"intent_id": intent_id, "phase": "PENDING", "account_id": account.decode(), "legs": []}
    return {"intent_id": intent_id, **(intent or {}), "legs": legs}


@get(both("/orders"), **spec("read", 400))
def list_orders(request: Request, symbol: FromQuery[str | None] = None, status: FromQuery[str | None] = None,
                limit: Limit = 100) -> dict:
    docs = _deps(request).store.query("orders", _where(symbol=symbol, status=status), order_by="created_at",
                                      desc=True, limit=limit)
    return {"items": docs, "count": len(docs)}


@post(both("/cancel"), status_code=HTTP_202_ACCEPTED, **spec("orders.write", unsafe=True))
def cancel_order(request: Request, data: JSONBody[CancelBody]) -> dict:
    d = _deps(request)
    one_account(data.account_id)
    mapped = d.r.get(keys.gw_order_account(data.intent_id))
    known = mapped is not None or d.store.get("order_intents", data.intent_id) is not None
    if not known and not data.account_id:
        raise ApiError(422, "ACCOUNT_ID_REQUIRED_FOR_CANCEL",
                       f"no local mapping for order {data.intent_id!r}: pass account_id explicitly",
                       field="account_id")
    account = data.account_id or (mapped.decode() if mapped is not None else "main")
    cmd = CancelOrder(intent_id=data.intent_id, symbol=data.symbol, client_order_id=data.client_order_id,
                      market=data.market, reason=data.reason or f"cancel by {principal(request).name}")
    d.producer.publish(keys.ORD_COMMANDS, cmd, idempotency_key=f"cancel:{data.intent_id}:{data.client_order_id}",
                       account_id=account)
    audit_detail(request, intent_id=data.intent_id, account_id=account)
    return {"intent_id": data.intent_id, "account_id": account}


# --- readers --------------------------------------------------------------------------------------


@get(both("/positions"), **spec("read", 400))
def list_positions(request: Request, symbol: FromQuery[str | None] = None,
                   pos_state: Annotated[str | None, QueryParameter(name="state")] = None,
                   account_id: Annotated[str | None, QueryParameter(
                       name="account_id", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9:_.-]+$",
                       description='one account, or "all": every account plus the All view (`aggregated`)')] = None,
                   limit: Limit = 100) -> dict:
    """Positions (S6's documents). With ``account_id=all``: ``aggregated`` sums the open ones per (market,
    symbol, side) over accounts, each account's share in ``accounts`` (read-only: orders name one account).
    ``virtual``: the strategies' virtual positions of the accounts shown (vpos role); ``unassigned``: venue
    quantity no strategy explains."""
    from chimera.gateway import ops

    d = _deps(request)
    one = account_id if account_id not in (None, "all") else None
    where = _where(symbol=symbol, state=pos_state)
    docs = d.store.query("positions", where, limit=limit if one is None else None)
    if one is not None:  # positions written before accounts carry none: they are main's
        docs = [p for p in docs if (p.get("account_id") or "main") == one][:limit]
    out: dict[str, Any] = {"items": docs, "count": len(docs), "account_id": account_id or "all"}
    if account_id == "all":
        open_docs = d.store.query("positions", {**_where(symbol=symbol), "state": ("in", list(ops.OPEN_STATES))})
        out["aggregated"] = ops.aggregate_positions(open_docs)
    return out | ops.virtual_rows(d.store, one, symbol)


@get(both("/signals"), **spec("read", 400))
def list_signals(request: Request, symbol: FromQuery[str | None] = None, limit: Limit = 100) -> dict:
    docs = _deps(request).store.query("signals", _where(symbol=symbol), limit=limit)
    return {"items": docs, "count": len(docs)}


def accounts_status(d) -> list[dict]:
    from chimera.gateway.ops import accounts_stream_status

    return accounts_stream_status(d)


@get(both("/accounts"), **spec("read"))
def list_accounts(request: Request) -> dict:
    """Every account of the accounts file with S1's stream status: ``ws_status`` (CONNECTED, CONNECTING,
    DISCONNECTED, DISABLED), ``last_error``, ``last_connected_at`` (ms), and the same per market stream."""
    out = accounts_status(_deps(request))
    return {"items": out, "count": len(out)}


# --- operations -----------------------------------------------------------------------------------


def set_or_request_lift(d, who, mode: str, reason: str, ttl_s: int, account_id: str | None = None) -> dict:
    """Setting the switch acts at once; lifting it (OFF) is stored for a second person's approval.
    ``account_id`` None is the global switch; an account's switch binds that account only."""
    one_account(account_id)
    if account_id is not None and not any(a.account_id == account_id for a in configured_accounts(d)):
        raise ApiError(422, "UNKNOWN_ACCOUNT", f"account {account_id!r} is not in the accounts file", field="account_id")
    scope = {"account_id": account_id} if account_id is not None else {}
    if mode == "OFF":
        if who.role not in ("risk", "admin"):
            raise ApiError(403, "FORBIDDEN", f"role {who.role!r} may not killswitch.lift (allowed: admin, risk)")
        doc = approvals.create(d, "KILL_SWITCH_LIFT", {"reason": reason, **scope}, who.name)
        return {"mode": "OFF", "status": "PENDING_APPROVAL", "approval_id": doc["approval_id"], **scope}
    now = d.clock.now_ms()
    try:
        set_kill_switch(RedisState(d.r), mode, set_by=who.name, reason=reason, ttl_ms=ttl_s * 1000, now_ms=now,
                        producer=d.producer, account_id=account_id)
    except ValueError as exc:
        raise ApiError(422, "RULE_VIOLATED", str(exc), field="mode") from None
    return {"mode": mode, "ttl_s": ttl_s, "set_at": now, "set_by": who.name, **scope}


@post(both("/kill-switch"), **(spec("killswitch.set", unsafe=True) | {"responses": error_responses(400, 401, 403, 422, 429) | {
    202: ResponseSpec(data_container=dict[str, str], description="mode OFF: the lift is stored for a second person's approval")}}))
def kill_switch(request: Request, data: JSONBody[KillSwitchBody]) -> Response:
    out = set_or_request_lift(_deps(request), principal(request), data.mode, data.reason, data.ttl_s, data.account_id)
    audit_detail(request, mode=data.mode, reason=data.reason, approval_id=out.get("approval_id", ""))
    return Response(out, status_code=202 if out.get("approval_id") else 201)


@post(both("/reconcile"), status_code=HTTP_202_ACCEPTED, **spec("reconcile.run", unsafe=True))
def reconcile(request: Request, data: JSONBody[ReconcileBody]) -> dict:
    d = _deps(request)
    one_account(data.account_id)
    run_id = f"recon-{uuid.uuid4().hex[:20]}"
    d.producer.publish(keys.RECON_COMMANDS, Reconcile(scope=data.scope, requested_by=principal(request).name),
                       idempotency_key=run_id, account_id=data.account_id)
    audit_detail(request, run_id=run_id, scope=data.scope)
    return {"run_id": run_id}


@get(both("/reconcile/{run_id:str}"), **spec("read", 404))
def reconcile_result(request: Request, run_id: FromPath[str]) -> dict:
    doc = _deps(request).store.get("strategy_events", f"RECONCILE_RUN:{run_id}")
    if doc is None:
        raise not_found("reconcile run", run_id)
    return doc


def request_transfer(d, who, asset: str, amount: str, direction: str, reason: str, transfer_id: str | None) -> dict:
    transfer_id = transfer_id or f"tr-{uuid.uuid4().hex[:24]}"
    doc = approvals.create(d, "TREASURY_TRANSFER", {"transfer_id": transfer_id, "asset": asset, "amount": amount,
                                                    "direction": direction, "reason": reason}, who.name)
    return {"transfer_id": transfer_id, "status": "PENDING_APPROVAL", "approval_id": doc["approval_id"]}


@post("/v1/xchg/treasury/transfer", status_code=HTTP_202_ACCEPTED, **spec("treasury.request", unsafe=True))
def xchg_treasury_transfer(request: Request, data: JSONBody[TransferBody]) -> dict:
    """S1's transfer API (seed 003): the same four-eyes request as /v1/treasury/transfer."""
    return _transfer(request, data)


@post("/v1/treasury/transfer", status_code=HTTP_202_ACCEPTED, **spec("treasury.request", unsafe=True))
def treasury_transfer(request: Request, data: JSONBody[TransferBody]) -> dict:
    """Moving money needs a second person: stored as an approval; S1 gets it once approved."""
    return _transfer(request, data)


def _transfer(request: Request, data: TransferBody) -> dict:
    out = request_transfer(_deps(request), principal(request), data.asset, data.amount, data.direction, data.reason,
                           data.transfer_id)
    audit_detail(request, **out)
    return out


# --- health ---------------------------------------------------------------------------------------


@get(both("/health"), **(spec(PUBLIC) | {"sync_to_thread": False}))
def health() -> dict:
    return {"status": "ok"}


@get(both("/ready"), **spec(PUBLIC, 503))
def ready(request: Request) -> dict:
    d = _deps(request)
    checks: dict[str, str] = {}
    try:
        d.r.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = f"error: {exc}"
    try:
        d.store.count("orders")
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["store"] = f"error: {exc}"
    if not all(v == "ok" for v in checks.values()):
        raise ApiError(503, "NOT_READY", "; ".join(f"{k}: {v}" for k, v in checks.items()))
    return {"ready": True, "checks": checks}


def p95(samples: list[int]) -> float | None:
    """Nearest-rank 95th percentile (a value that was actually observed)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return float(ordered[max(0, -(-95 * len(ordered) // 100) - 1)])


class RouterCollector:
    """S4's figures from ``ord:{metrics}:router``, shared by every router replica, read per scrape.

    A figure with nothing observed yet exports no sample (an absent series, not a made-up 0)."""

    def __init__(self, r) -> None:
        self.r = r

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        raw = self.r.hgetall(keys.ROUTER_COUNTERS) or {}
        counts = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
        ack = p95([int(x) for x in self.r.lrange(keys.ROUTER_ACK_MS, 0, -1)])
        if ack is not None:
            yield GaugeMetricFamily("chimera_router_ack_p95_seconds",
                                    "S4 command -> venue ack per leg, p95 of the last samples", value=ack / 1000)
        # A counter (monotonic in Redis), so rate()/increase() apply; no _created: the start is unknown here.
        yield CounterMetricFamily("chimera_maker_timeouts_total", "Maker legs whose window ran out (then taker)",
                                  value=counts.get("maker_timeout_count", 0))
        sent = counts.get("maker_sent_count", 0)
        if sent:
            yield GaugeMetricFamily("chimera_maker_fill_ratio",
                                    "Maker legs filled (fully or partly in the window) / maker legs resting",
                                    value=counts.get("maker_filled_count", 0) / sent)


@get(both("/metrics"), media_type="text/plain", **spec(PUBLIC))
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    router = CollectorRegistry()
    router.register(RouterCollector(_deps(request).r))
    return Response(generate_latest() + generate_latest(router), media_type=CONTENT_TYPE_LATEST)


LEGACY = ["/orders", "/orders/{intent_id:str}", "/cancel", "/positions", "/signals", "/accounts", "/kill-switch",
          "/reconcile", "/reconcile/{run_id:str}", "/treasury/transfer", "/health", "/ready", "/metrics"]


@route(LEGACY, http_method=["GET", "POST"], opt={"perm": PUBLIC, "redirect": True}, include_in_schema=False,
       sync_to_thread=False)
def legacy_redirect(request: Request) -> Redirect:
    """The pre-/v1 paths answer 307 to their /v1 twin (method, body and headers are kept by clients)."""
    target = "/v1" + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(target, status_code=307)


ROUTES = [legacy_redirect, xchg_treasury_transfer, create_order, get_order, list_orders, cancel_order, list_positions, list_signals, list_accounts,
          kill_switch, reconcile, reconcile_result, treasury_transfer, health, ready, metrics]
