"""S12 routes: thin producers (validate, XADD, 202 with the id to poll) and readers of the store.

No route calls a handler: commands go on the streams the workers consume (ARCHITECTURE §1).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from chimera.gateway.errors import ApiError, not_found
from chimera.handlers.strategy.killswitch import clear_kill_switch, set_kill_switch
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
    TransferRequest,
    TransferType,
)
from chimera.schemas.strategy import KillMode
from chimera.streams import keys

Positive = Decimal  # > 0, checked by _positive (msgspec cannot constrain Decimal)
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9:_.-]+$")]
MAPPING_TTL_S = 30 * 24 * 3600
MAX_LIMIT = 500


# --- request bodies -----------------------------------------------------------------------------


class OrderBody(msgspec.Struct, forbid_unknown_fields=True):
    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[A-Z0-9]+$")]
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
    symbol: str = ""
    client_order_id: str = ""
    market: ProductMarket = "FUT"
    reason: str = ""


class KillSwitchBody(msgspec.Struct, forbid_unknown_fields=True):
    mode: KillMode | Literal["OFF"]
    reason: Annotated[str, msgspec.Meta(min_length=1)]
    ttl_s: Annotated[int, msgspec.Meta(gt=0, le=7 * 24 * 3600)] = 3600
    set_by: str = "gateway"


class ReconcileBody(msgspec.Struct, forbid_unknown_fields=True):
    scope: Literal["ALL", "ORDERS", "POSITIONS"] = "ALL"
    requested_by: str = "gateway"
    account_id: Id = "main"


class TransferBody(msgspec.Struct, forbid_unknown_fields=True):
    asset: Annotated[str, msgspec.Meta(min_length=1, max_length=10, pattern=r"^[A-Z0-9]+$")]
    amount: Positive
    direction: TransferType
    transfer_id: Id | None = None
    requested_by: str = "gateway"
    reason: str = ""


# --- helpers --------------------------------------------------------------------------------------


def _deps(request: Request) -> Any:
    return request.app.state.chimera


def _limit(limit: int) -> int:
    if not 0 < limit <= MAX_LIMIT:
        raise ApiError(400, "INVALID_REQUEST", f"limit must be in 1..{MAX_LIMIT}", field="limit")
    return limit


def _where(**filters: str | None) -> dict:
    return {k: v for k, v in filters.items() if v}


def _positive(data: msgspec.Struct, *fields: str) -> None:
    for name in fields:
        value = getattr(data, name)
        if value is not None and not (value.is_finite() and value > 0):
            raise ApiError(400, "INVALID_REQUEST", f"{name} must be a positive number, got {value}", field=name)


# --- orders ---------------------------------------------------------------------------------------


@post("/orders", status_code=HTTP_202_ACCEPTED, sync_to_thread=True)
def create_order(request: Request, data: JSONBody[OrderBody]) -> dict:
    d = _deps(request)
    _positive(data, "qty", "price", "stop_price", "tp_price", "sl_price")
    intent_id = data.intent_id or f"gw-{uuid.uuid4().hex[:24]}"
    if data.exec_policy == "LIMIT" and data.price is None:
        raise ApiError(400, "INVALID_REQUEST", "exec_policy LIMIT needs price", field="price")
    if data.exec_policy == "STOP" and data.stop_price is None:
        raise ApiError(400, "INVALID_REQUEST", "exec_policy STOP needs stop_price", field="stop_price")
    intent = OrderIntent(
        intent_id=intent_id, market=data.market, symbol=data.symbol, side=data.side, qty=data.qty,
        exec_policy=data.exec_policy, purpose=data.purpose, price=data.price, stop_price=data.stop_price,
        tp_price=data.tp_price, sl_price=data.sl_price, reduce_only=data.reduce_only, leverage=data.leverage)
    # The mapping first: a cancel right after the 202 must find the account.
    d.r.set(keys.gw_order_account(intent_id), data.account_id, ex=MAPPING_TTL_S)
    d.producer.publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), idempotency_key=intent_id,
                       account_id=data.account_id)
    return {"intent_id": intent_id, "status": "ACCEPTED_FOR_PROCESSING"}


@get("/orders/{intent_id:str}", sync_to_thread=True)
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


@get("/orders", sync_to_thread=True)
def list_orders(request: Request, symbol: FromQuery[str | None] = None, status: FromQuery[str | None] = None, limit: FromQuery[int] = 100) -> dict:
    docs = _deps(request).store.query("orders", _where(symbol=symbol, status=status), order_by="created_at",
                                      desc=True, limit=_limit(limit))
    return {"items": docs, "count": len(docs)}


@post("/cancel", status_code=HTTP_202_ACCEPTED, sync_to_thread=True)
def cancel_order(request: Request, data: JSONBody[CancelBody]) -> dict:
    d = _deps(request)
    mapped = d.r.get(keys.gw_order_account(data.intent_id))
    known = mapped is not None or d.store.get("order_intents", data.intent_id) is not None
    if not known and not data.account_id:
        raise ApiError(400, "ACCOUNT_ID_REQUIRED_FOR_CANCEL",
                       f"no local mapping for order {data.intent_id!r}: pass account_id explicitly",
                       field="account_id")
    account = data.account_id or (mapped.decode() if mapped is not None else "main")
    cmd = CancelOrder(intent_id=data.intent_id, symbol=data.symbol, client_order_id=data.client_order_id,
                      market=data.market, reason=data.reason or "gateway cancel")
    d.producer.publish(keys.ORD_COMMANDS, cmd, idempotency_key=f"cancel:{data.intent_id}:{data.client_order_id}",
                       account_id=account)
    return {"intent_id": data.intent_id, "account_id": account}


# --- readers --------------------------------------------------------------------------------------


@get("/positions", sync_to_thread=True)
def list_positions(request: Request, symbol: FromQuery[str | None] = None,
                   pos_state: Annotated[str | None, QueryParameter(name="state")] = None, limit: FromQuery[int] = 100) -> dict:
    docs = _deps(request).store.query("positions", _where(symbol=symbol, state=pos_state), limit=_limit(limit))
    return {"items": docs, "count": len(docs)}


@get("/signals", sync_to_thread=True)
def list_signals(request: Request, symbol: FromQuery[str | None] = None, limit: FromQuery[int] = 100) -> dict:
    docs = _deps(request).store.query("signals", _where(symbol=symbol), limit=_limit(limit))
    return {"items": docs, "count": len(docs)}


@get("/accounts", sync_to_thread=True)
def list_accounts(request: Request) -> dict:
    from chimera.venues.accounts import load_accounts

    d = _deps(request)
    out = []
    for acc in load_accounts(d.settings.accounts_file or None, d.settings.venue):
        st = _stream_status(d.r, keys.s1_stream_status(acc.account_id))
        item = {"account_id": acc.account_id, "enabled": acc.enabled,
                "ws_status": st.get("ws_status", "DISCONNECTED" if acc.enabled else "DISABLED"),
                "last_error": st.get("last_error", ""),
                "last_connected_at": int(st.get("last_connected_at") or 0), "markets": {}}
        for market in keys.S1_STATUS_MARKETS:  # only the streams S1 runs for this account have a hash
            ms = _stream_status(d.r, keys.s1_stream_status_market(acc.account_id, market))
            if ms:
                item["markets"][market] = {"ws_status": ms.get("ws_status", ""), "last_error": ms.get("last_error", ""),
                                           "last_connected_at": int(ms.get("last_connected_at") or 0)}
        out.append(item)
    return {"items": out, "count": len(out)}


def _stream_status(r, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (r.hgetall(key) or {}).items()}


# --- operations -----------------------------------------------------------------------------------


@post("/kill-switch", sync_to_thread=True)
def kill_switch(request: Request, data: JSONBody[KillSwitchBody]) -> dict:
    d = _deps(request)
    state = RedisState(d.r)
    now = d.clock.now_ms()
    if data.mode == "OFF":
        clear_kill_switch(state, cleared_by=data.set_by, reason=data.reason, now_ms=now, producer=d.producer)
        return {"mode": "OFF"}
    try:
        set_kill_switch(state, data.mode, set_by=data.set_by, reason=data.reason, ttl_ms=data.ttl_s * 1000,
                        now_ms=now, producer=d.producer)
    except ValueError as exc:
        raise ApiError(400, "INVALID_REQUEST", str(exc), field="mode") from None
    return {"mode": data.mode, "ttl_s": data.ttl_s, "set_at": now}


@post("/reconcile", status_code=HTTP_202_ACCEPTED, sync_to_thread=True)
def reconcile(request: Request, data: JSONBody[ReconcileBody | None] = None) -> dict:
    d = _deps(request)
    data = data or ReconcileBody()
    run_id = f"recon-{uuid.uuid4().hex[:20]}"
    d.producer.publish(keys.RECON_COMMANDS, Reconcile(scope=data.scope, requested_by=data.requested_by),
                       idempotency_key=run_id, account_id=data.account_id)
    return {"run_id": run_id}


@get("/reconcile/{run_id:str}", sync_to_thread=True)
def reconcile_result(request: Request, run_id: FromPath[str]) -> dict:
    doc = _deps(request).store.get("strategy_events", f"RECONCILE_RUN:{run_id}")
    if doc is None:
        raise not_found("reconcile run", run_id)
    return doc


@post("/treasury/transfer", status_code=HTTP_202_ACCEPTED, sync_to_thread=True)
def treasury_transfer(request: Request, data: JSONBody[TransferBody]) -> dict:
    d = _deps(request)
    _positive(data, "amount")
    transfer_id = data.transfer_id or f"tr-{uuid.uuid4().hex[:24]}"
    req = TransferRequest(transfer_id=transfer_id, asset=data.asset, amount=data.amount, direction=data.direction,
                          requested_by=data.requested_by, reason=data.reason)
    d.producer.publish(keys.TREASURY_COMMANDS, req, idempotency_key=transfer_id)
    return {"transfer_id": transfer_id}


# --- health ---------------------------------------------------------------------------------------


@get("/health", sync_to_thread=False)
def health() -> dict:
    return {"status": "ok"}


@get("/ready", sync_to_thread=True)
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


def router_gauges(r) -> dict[str, tuple[str, float | None]]:
    """S4's figures from ``ord:{metrics}:router`` (None: nothing observed yet, so no sample is exported)."""
    counts = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in (r.hgetall(keys.ROUTER_COUNTERS) or {}).items()}
    sent = counts.get("maker_sent_count", 0)
    return {
        "chimera_router_p95_ms": ("S4 command -> venue ack per leg, p95 of the last samples (ms)",
                                  p95([int(x) for x in r.lrange(keys.ROUTER_ACK_MS, 0, -1)])),
        "chimera_maker_timeout_count": ("Maker legs whose window ran out (then taker)",
                                        float(counts.get("maker_timeout_count", 0))),
        "chimera_maker_fill_ratio": ("Maker legs filled (fully or partly in the window) / maker legs resting",
                                     counts.get("maker_filled_count", 0) / sent if sent else None),
    }


@get("/metrics", sync_to_thread=True)
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

    # A fresh registry per scrape: the values live in Redis, shared by every router replica.
    router = CollectorRegistry()
    for name, (doc, value) in router_gauges(_deps(request).r).items():
        if value is not None:
            Gauge(name, doc, registry=router).set(value)
    return Response(generate_latest() + generate_latest(router), media_type=CONTENT_TYPE_LATEST)


ROUTES = [create_order, get_order, list_orders, cancel_order, list_positions, list_signals, list_accounts,
          kill_switch, reconcile, reconcile_result, treasury_transfer, health, ready, metrics]
