"""S4's toolkit: typed intent/leg persistence, the exactly-once leg recipe, results, fills, timers, metrics.

Every leaf module (``market``, ``maker``, ``twap``, ``spot``, ``cancel``, ``reports``, ``submit``) builds
on this module and on nothing else of the router, so there is no import circle.

The exactly-once recipe (ARCHITECTURE §2.2), per leg (``orders/<intent_id>:<leg>``, ``OrderLeg``):

1. the leg is written as INITIALIZED (with its deterministic client id) before anything goes on the wire;
2. INITIALIZED -> SUBMITTED is written *before* the request is sent, so a worker that dies mid-request
   leaves SUBMITTED behind and the next delivery knows it must ask the venue;
3. timeout / 5xx / lost reply / 429 -> UNKNOWN; UNKNOWN is resolved by querying the client id. Found:
   adopt the venue's state. Not found: the request never executed, and only then is it sent again (same
   client id, so an open duplicate is still refused by the venue);
4. a duplicate-client-id rejection means the venue already has it: query and adopt.

Every status change goes through ``ORDER_FSM`` and ``store.update_if(expect=status)``; the caller holds
the per-intent lock, so a lost compare-and-set means a venue report or a holder whose lock expired moved
the order first: continue from the stored state when the event still applies there, else retry the entry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec
from loguru import logger

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.common import dec, strategy_event, venue
from chimera.schemas.documents.orders import (
    BookLevels,
    FillDoc,
    GuardStop,
    IntentDoc,
    OrderLeg,
    VenueSetting,
    from_doc,
    to_doc,
)
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import OrderResult, TimerFired
from chimera.schemas.states import (
    ORDER_FSM,
    IllegalTransition,
    OrderEvent,
    OrderStatus,
    order_event_for_venue_status,
)
from chimera.store import collections as coll
from chimera.streams import keys
from chimera.streams.producer import CancelTimer, Emit
from chimera.venues.binance.adapter import (
    AlreadyAccepted,
    OrderNotFound,
    VenueError,
    VenueOrder,
    VenueRateLimited,
    VenueRejected,
    VenueUnknown,
    client_order_id,
)
from chimera.workers.handler import Context

__all__ = ["dec", "strategy_event"]  # re-exported for the leaf modules and S5

INTENTS, ORDERS, FILLS, GUARDS = coll.ORDER_INTENTS, coll.ORDERS, coll.FILLS, coll.GUARD_STOPS
S = OrderStatus
ZERO = Decimal(0)
QUERY_ATTEMPTS = 3
CAS_ATTEMPTS = 4
UNACKED = (S.INITIALIZED.value, S.SUBMITTED.value, S.UNKNOWN.value)
LIVE = (S.ACCEPTED.value, S.TRIGGERED.value, S.PARTIALLY_FILLED.value)
PLACED = (*LIVE, S.FILLED.value)
EXECUTED = (S.PARTIALLY_FILLED.value, S.FILLED.value)
Out = list[Emit | CancelTimer]
# S4's timers (``TimerFired.name``); the route table maps each to its leaf module.
MAKER_CHECK, TWAP_SLICE, GUARD_CHECK, BOOK_FILLS = "maker_check", "twap_slice", "guard_check", "book_fills"


def param(ctx: Context, name: str, default):
    """Router parameters from the active bundle: ``router.<name>`` or ``{"router": {name: ...}}``."""
    return ctx.config.param("router", name, default)


def client(ctx: Context, intent: IntentDoc):
    """The venue client for the intent's account and market (FuturesTrading or SpotTrading)."""
    return venue(ctx, intent.account_id).for_market(intent.market)


def hooks(ctx: Context) -> dict:
    """Test hooks (crash points); empty in production."""
    return ctx.services.get("router_hooks") or {}


def leg_key(intent_id: str, leg: str) -> str:
    return f"{intent_id}:{leg}"


def is_terminal(leg: OrderLeg) -> bool:
    return ORDER_FSM.is_terminal(S(leg.status))


# --- intents --------------------------------------------------------------------------------------------


def load_intent(ctx: Context, intent_id: str) -> IntentDoc | None:
    return from_doc(ctx.store.get(INTENTS, intent_id), IntentDoc)


def set_phase(ctx: Context, intent: IntentDoc, phase: str, **extra: Any) -> IntentDoc:
    """Move the intent's phase (compare-and-set on the phase it was read in)."""
    patch = {"phase": phase, "updated_at": ctx.now_ms(), **extra}
    if not ctx.store.update_if(INTENTS, intent.intent_id, msgspec.to_builtins(patch), {"phase": intent.phase}):
        # Another holder (after a lock expiry) moved it: retry, the handler re-reads and continues from there.
        raise RetryableError(f"intent {intent.intent_id} moved from {intent.phase} under us")
    return msgspec.structs.replace(intent, **patch)


def result_for(intent: IntentDoc, leg: str, status: str, *, filled: Decimal = ZERO, avg: Decimal | None = None,
               doc: OrderLeg | None = None, reason: str = "") -> OrderResult:
    return OrderResult(
        intent_id=intent.intent_id, leg=leg, client_order_id=doc.client_order_id if doc else "",
        symbol=intent.symbol, status=status, side=intent.side, purpose=intent.purpose,
        venue_order_id=doc.venue_order_id if doc else "", qty=intent.qty, filled_qty=filled, avg_price=avg,
        reason=reason, pos_id=intent.pos_id, account_id=intent.account_id,
    )


def leg_result(intent: IntentDoc, doc: OrderLeg, reason: str = "") -> OrderResult:
    """A leg's own step (accepted, part filled...), not the intent's final answer."""
    return result_for(intent, doc.leg, doc.status, filled=doc.filled_qty, avg=doc.avg_price, doc=doc,
                      reason=reason)


def emit_result(res: OrderResult) -> Emit:
    return Emit(keys.ORD_RESULTS, res, f"{res.intent_id}:{res.leg}:{res.status}", res.account_id or "main")


def finish(ctx: Context, intent: IntentDoc, res: OrderResult) -> Out:
    """Record the intent's final result (re-emitted as-is for any later duplicate command)."""
    ctx.store.update_if(INTENTS, intent.intent_id, {"phase": "DONE", "result": msgspec.to_builtins(res),
                                                    "updated_at": ctx.now_ms()}, {"phase": intent.phase})
    return [emit_result(res)]


# --- timers (returned, armed by the runtime) ------------------------------------------------------------


def timer(name: str, intent_id: str, due_ms: int, part: str = "", **data: str) -> Emit:
    """A timer on ``ord:{timers}``; re-arming the same (name, intent, part) replaces the armed one."""
    t = TimerFired(name=name, ref=intent_id, due_ms=due_ms, data={**({"part": part} if part else {}), **data})
    return Emit(keys.ROUTER_TIMERS, t, f"timer:{name}:{intent_id}:{part}:{due_ms}", due_ms=due_ms,
                timer_key=keys.router_timer(name, intent_id, part))


def cancel_timer(name: str, intent_id: str, part: str = "") -> CancelTimer:
    return CancelTimer(keys.router_timer(name, intent_id, part))


def command_ms(env: Envelope, intent: IntentDoc) -> int:
    """When the work that sends a leg was asked for: a timer's due time, else the command's publish time."""
    if isinstance(env.payload, TimerFired):
        return env.payload.due_ms
    return env.event_time or intent.created_at


# --- metrics ------------------------------------------------------------------------------------------


def count(ctx: Context, name: str, intent_id: str | None = None) -> None:
    """``name`` += 1; with ``intent_id`` at most once per intent whatever the redeliveries."""
    ctx.exec_metrics.count(name, intent_id)


# --- legs: documents ------------------------------------------------------------------------------------


def load_leg(ctx: Context, intent_id: str, leg: str) -> OrderLeg | None:
    return from_doc(ctx.store.get(ORDERS, leg_key(intent_id, leg)), OrderLeg)


def legs_of(ctx: Context, intent_id: str) -> list[OrderLeg]:
    return [from_doc(d, OrderLeg) for d in ctx.store.query(ORDERS, {"intent_id": intent_id})]


def new_leg(intent: IntentDoc | Mapping, leg: str, *, order_type: str, side: str, qty: Decimal, now_ms: int,
            price: Decimal | None = None, stop_price: Decimal | None = None, tif: str | None = None,
            reduce_only: bool = False, algo: bool = False, purpose: str | None = None,
            book: dict | None = None) -> OrderLeg:
    """A leg (INITIALIZED) with its deterministic client id. ``intent`` may be a plain mapping with at least
    ``intent_id``, ``market`` and ``symbol`` (S5 adopting an order it found at the venue)."""
    get = intent.get if isinstance(intent, Mapping) else lambda k, d=None: getattr(intent, k, d)
    iid = get("intent_id")
    return OrderLeg(intent_id=iid, leg=leg, client_order_id=client_order_id(iid, leg), market=get("market"),
                    symbol=get("symbol"), side=side, type=order_type, qty=qty, price=price, stop_price=stop_price,
                    tif=tif, reduce_only=reduce_only, algo=algo, purpose=purpose or get("purpose") or "ENTRY",
                    pos_id=get("pos_id") or "", created_at=now_ms, updated_at=now_ms,
                    account_id=get("account_id") or "main", **(book or {}))


def new_leg_doc(intent: IntentDoc | Mapping, leg: str, **kw: Any) -> dict:
    """``new_leg`` as the stored dict."""
    return to_doc(new_leg(intent, leg, **kw))


def ensure_leg(store, doc: OrderLeg) -> OrderLeg:
    """Persist the leg (INITIALIZED) unless it exists; return the stored version."""
    store.insert_if_absent(ORDERS, doc.key, to_doc(doc))
    return from_doc(store.get(ORDERS, doc.key), OrderLeg)


def snapshot_book(client, symbol: str) -> dict:
    """Mid and top-3 levels at send time, for fills' slippage (REST depth: one more round trip)."""
    try:
        book = client.book(symbol, 5)
    except VenueError as exc:
        logger.warning("no book for {} at send: {}", symbol, exc)
        return {}
    return {"mid_at_send": book.mid, "top3_at_send": BookLevels(bids=book.bids[:3], asks=book.asks[:3]),
            "best_bid": book.bids[0][0] if book.bids else None, "best_ask": book.asks[0][0] if book.asks else None}


def note_arrival(ctx: Context, intent: IntentDoc, book: dict) -> IntentDoc:
    """The first book seen for the intent is its arrival mid (the fills' slippage reference)."""
    mid = book.get("mid_at_send")
    if intent.arrival_mid is not None or mid is None:
        return intent
    ctx.store.update_if(INTENTS, intent.intent_id, {"arrival_mid": str(mid)}, {"phase": intent.phase})
    return msgspec.structs.replace(intent, arrival_mid=mid)


def open_leg(ctx: Context, intent: IntentDoc, leg: str, order_type: str, qty: Decimal, *, with_book: bool = True,
             side: str | None = None, **kw: Any) -> tuple[IntentDoc, OrderLeg]:
    """Persist the leg (INITIALIZED) with the book at send, before anything goes on the wire."""
    existing = load_leg(ctx, intent.intent_id, leg)
    if existing is not None:
        return intent, existing
    book = snapshot_book(client(ctx, intent), intent.symbol) if with_book else {}
    intent = note_arrival(ctx, intent, book)
    doc = new_leg(intent, leg, order_type=order_type, side=side or intent.side, qty=qty, now_ms=ctx.now_ms(),
                  reduce_only=intent.reduce_only and intent.market == "FUT", book=book, **kw)
    return intent, ensure_leg(ctx.store, doc)


# --- legs: the state machine against the venue -----------------------------------------------------------


def move(store, doc: OrderLeg, event: OrderEvent, now_ms: int, patch: dict | None = None, *,
         tolerate_illegal: bool = False) -> OrderLeg:
    """One ORDER_FSM step written with compare-and-set on the status.

    ``tolerate_illegal`` (venue reports) logs a move the table forbids instead of raising.
    """
    for attempt in range(CAS_ATTEMPTS):
        cur = S(doc.status)
        if not ORDER_FSM.can(cur, event):
            if tolerate_illegal:
                logger.warning("order {}: {} in state {} is not a legal move; ignored", doc.key, event, cur)
                return doc
            if attempt == 0:
                raise PermanentError(f"order {doc.client_order_id}: {IllegalTransition(cur, event)}")
            raise RetryableError(f"order {doc.key} moved to {cur} under us; {event} no longer applies; retrying")
        new = ORDER_FSM.transition(cur, event)
        fields = {**(patch or {}), "status": new.value, "updated_at": now_ms}
        if new == cur and all(getattr(doc, k) == v for k, v in fields.items() if k != "updated_at"):
            return doc
        if store.update_if(ORDERS, doc.key, msgspec.to_builtins(fields), {"status": cur.value}):
            return msgspec.structs.replace(doc, **fields)
        doc = from_doc(store.get(ORDERS, doc.key), OrderLeg)
    raise RetryableError(f"order {doc.key} keeps changing under us; retrying")


def adopt(store, doc: OrderLeg | dict, vo: VenueOrder, now_ms: int) -> OrderLeg:
    """Apply what the venue says about the order (ack, fill, cancel...). S5 passes the stored dict."""
    if isinstance(doc, dict):
        doc = from_doc(doc, OrderLeg)
    event = order_event_for_venue_status(vo.status)
    patch: dict = {"venue_order_id": vo.venue_order_id or doc.venue_order_id}
    if vo.filled_qty:
        patch["filled_qty"] = vo.filled_qty
    if vo.avg_price:
        patch["avg_price"] = vo.avg_price
    status = S(doc.status)
    if status == S.INITIALIZED:  # adopted before we ever sent (e.g. a reconciler replay)
        doc = move(store, doc, OrderEvent.ORDER_SUBMITTED, now_ms)
    if event == OrderEvent.ORDER_PARTIALLY_FILLED and status in (S.SUBMITTED, S.UNKNOWN):
        doc = move(store, doc, OrderEvent.ORDER_ACCEPTED, now_ms)
    return move(store, doc, event, now_ms, patch)


def query(client, doc: OrderLeg) -> VenueOrder:
    """Query by client id with a short in-handler retry: a 5xx on a *read* is harmless to repeat."""
    last: Exception | None = None
    for attempt in range(QUERY_ATTEMPTS):
        try:
            return client.query(doc.symbol, doc.client_order_id, algo=doc.algo)
        except (VenueUnknown, VenueRateLimited) as exc:
            last = exc
            time.sleep(0.05 * (attempt + 1))  # a network pause, not logic time
    raise RetryableError(f"cannot resolve {doc.client_order_id}: {last}")


def _send(client, doc: OrderLeg) -> VenueOrder:
    if doc.algo:
        return client.new_stop(symbol=doc.symbol, side=doc.side, type=doc.type, qty=doc.qty, trigger=doc.stop_price,
                               client_id=doc.client_order_id)
    kw: dict = {}
    if doc.stop_price is not None and doc.market == "SPOT":
        kw["stop_price"] = doc.stop_price
    return client.new_order(symbol=doc.symbol, side=doc.side, type=doc.type, qty=doc.qty,
                            client_id=doc.client_order_id, price=doc.price, tif=doc.tif,
                            reduce_only=doc.reduce_only, **kw)


def place(ctx: Context, client, doc: OrderLeg) -> OrderLeg:
    """Drive the leg until the venue has it (or refused it). Returns the updated leg."""
    store, now_ms = ctx.store, ctx.now_ms()
    status = S(doc.status)
    if status == S.INITIALIZED:
        doc = move(store, doc, OrderEvent.ORDER_SUBMITTED, now_ms)
        if hooks(ctx).get("after_submitted"):
            hooks(ctx)["after_submitted"](doc)  # tests: crash between persist and send
        return _send_and_apply(store, client, doc, now_ms)
    if status == S.SUBMITTED:
        # A previous attempt died mid-request: its outcome is unknown, never assume either way.
        doc = move(store, doc, OrderEvent.ORDER_TIMED_OUT, now_ms, {"reason": "resumed after crash"})
        status = S.UNKNOWN
    if status == S.UNKNOWN:
        return resolve(store, client, doc, now_ms)
    return doc


def place_leg(env: Envelope, ctx: Context, client, intent: IntentDoc, doc: OrderLeg) -> OrderLeg:
    """``place`` + the command -> venue-ack latency, sampled by the delivery that got the venue's answer."""
    before = doc.status
    doc = place(ctx, client, doc)
    if before in UNACKED and doc.status not in UNACKED:
        ctx.exec_metrics.sample_ack_ms(ctx.now_ms() - command_ms(env, intent))
    return doc


def resolve(store, client, doc: OrderLeg, now_ms: int) -> OrderLeg:
    try:
        vo = query(client, doc)
    except OrderNotFound:
        logger.info("order {} never reached the venue; sending it now", doc.client_order_id)
        return _send_and_apply(store, client, doc, now_ms)
    return adopt(store, doc, vo, now_ms)


def _send_and_apply(store, client, doc: OrderLeg, now_ms: int) -> OrderLeg:
    try:
        vo = _send(client, doc)
    except AlreadyAccepted:
        return adopt(store, doc, query(client, doc), now_ms)
    except (VenueUnknown, VenueRateLimited) as exc:
        if doc.status == S.SUBMITTED.value:
            doc = move(store, doc, OrderEvent.ORDER_TIMED_OUT, now_ms, {"reason": str(exc)[:200]})
        if isinstance(exc, VenueRateLimited):
            raise RetryableError(f"rate limited sending {doc.client_order_id}") from exc
        return resolve(store, client, doc, now_ms)
    except VenueRejected as exc:
        return move(store, doc, OrderEvent.ORDER_REJECTED, now_ms,
                    {"reason": f"{exc.code}: {exc.msg}", "reject_code": exc.code})
    return adopt(store, doc, vo, now_ms)


def refresh(ctx: Context, client, doc: OrderLeg) -> OrderLeg:
    """Ask the venue for the leg's current state (live legs only)."""
    if (is_terminal(doc) and doc.status != S.CANCELED.value) or doc.status == S.INITIALIZED.value:
        return doc
    return adopt(ctx.store, doc, query(client, doc), ctx.now_ms())


def cancel(ctx: Context, client, doc: OrderLeg) -> OrderLeg:
    """Cancel a live leg and return its final state (a fill that beat the cancel wins)."""
    store, now_ms = ctx.store, ctx.now_ms()
    if is_terminal(doc):
        return doc
    if doc.status in (S.UNKNOWN.value, S.SUBMITTED.value):
        doc = place(ctx, client, doc)
        if is_terminal(doc):
            return doc
    if ORDER_FSM.can(S(doc.status), OrderEvent.ORDER_CANCEL_REQUESTED):
        doc = move(store, doc, OrderEvent.ORDER_CANCEL_REQUESTED, now_ms)
    try:
        client.cancel(doc.symbol, doc.client_order_id, algo=doc.algo)
    except (OrderNotFound, VenueUnknown, VenueRateLimited, VenueRejected) as exc:
        # Unknown order: it filled or ended before the cancel landed. Lost reply: it may have
        # been canceled. Either way the query below is the truth.
        logger.info("cancel {}: {}; querying", doc.client_order_id, exc)
    vo = query(client, doc)
    if vo.status in ("NEW", "PARTIALLY_FILLED", "TRIGGERED") and doc.status == S.PENDING_CANCEL.value:
        # Still live at the venue after our cancel: back to UNKNOWN, the entry is retried.
        move(store, doc, OrderEvent.ORDER_CANCEL_REJECTED, now_ms)
        raise RetryableError(f"cancel of {doc.client_order_id} did not take; retrying")
    return adopt(store, doc, vo, now_ms)


def cancel_live(ctx: Context, client, docs: list[OrderLeg | None]) -> list[OrderLeg]:
    """Cancel whichever of ``docs`` are live at the venue; returns every given leg's latest state."""
    out = []
    for d in docs:
        if d is None:
            continue
        if not is_terminal(d) and d.status != S.INITIALIZED.value:
            d = cancel(ctx, client, d)
        out.append(d)
    return out


# --- fills ------------------------------------------------------------------------------------------------


def fill_key(doc: OrderLeg, trade_id) -> str:
    # A trade id is the venue's per symbol, not per account: two of our accounts on both sides of one
    # trade share it. Accounts other than main prefix theirs (main keeps the keys it always had).
    base = f"{doc.market}:{doc.symbol}:{trade_id}"
    return base if doc.account_id == "main" else f"{doc.account_id}:{base}"


def fill_doc(intent: IntentDoc | None, doc: OrderLeg, *, trade_id, price: Decimal, qty: Decimal, fee: Decimal,
             fee_asset: str, is_maker: bool, ts: int) -> FillDoc:
    """A fill with the book at send and its slippage vs the intent's arrival mid (bps, positive = worse)."""
    arrival = intent.arrival_mid if intent else None
    slip = None
    if arrival:
        sign = 1 if doc.side == "BUY" else -1
        slip = float((price - arrival) / arrival * 10_000 * sign)
    return FillDoc(trade_id=str(trade_id), intent_id=doc.intent_id, leg=doc.leg, client_order_id=doc.client_order_id,
                   symbol=doc.symbol, side=doc.side, qty=qty, price=price, fee=fee, fee_asset=fee_asset,
                   is_maker=is_maker, mid_at_send=doc.mid_at_send, top3_at_send=doc.top3_at_send,
                   arrival_mid=arrival, slippage_bps=slip, purpose=doc.purpose, pos_id=doc.pos_id, ts=ts,
                   account_id=doc.account_id)


def record_fills(ctx: Context, client, intent: IntentDoc, doc: OrderLeg, *, retry: bool = False) -> None:
    """One ``fills`` document per venue trade of the leg (key: market:symbol:trade id).

    ``retry``: a read that may succeed later (5xx, timeout, rate limit) raises, so the runtime hands the
    step back (the ``book_fills`` timer): the trades are the books' source, and S1's report of the same
    trade may be lost too (a WebSocket gap). Inline callers keep the order's outcome and log instead.
    """
    if not doc.venue_order_id or not doc.filled_qty or doc.algo:
        return
    try:
        trades = client.trades(doc.symbol, doc.venue_order_id)
    except VenueError as exc:
        if retry and isinstance(exc, RetryableError):
            raise
        logger.warning("trades of {} unavailable: {}", doc.client_order_id, exc)
        return
    for t in trades:
        ctx.store.upsert(FILLS, fill_key(doc, t["id"]), to_doc(fill_doc(
            intent, doc, trade_id=t["id"], price=Decimal(str(t["price"])), qty=Decimal(str(t["qty"])),
            fee=Decimal(str(t.get("commission", "0"))), fee_asset=t.get("commissionAsset", "USDT"),
            is_maker=bool(t.get("maker", t.get("isMaker", False))), ts=int(t.get("time", 0)))))


def book_fills_later(ctx: Context, doc: OrderLeg) -> Out:
    """Book the leg's trades as a follow-up step (a timer due now, ``reports.on_book_fills``).

    The fills need one more REST call per leg; taking it off the handler that got the fill publishes the
    result sooner, and S6 places the exchange-side stop from that result (issue #6: the stop is at the venue
    within 100 ms of the fill). Same keys as S1's reports: a trade is booked once whichever path comes first.
    """
    if not doc.venue_order_id or not doc.filled_qty or doc.algo:
        return []
    return [timer(BOOK_FILLS, doc.intent_id, ctx.now_ms(), part=doc.leg)]


def fills_of(ctx: Context, where: dict) -> list[FillDoc]:
    return [from_doc(f, FillDoc) for f in ctx.store.query(FILLS, where)]


def aggregate(docs: list[OrderLeg]) -> tuple[Decimal, Decimal | None]:
    filled = sum((d.filled_qty for d in docs), ZERO)
    notional = sum((d.filled_qty * (d.avg_price or ZERO) for d in docs), ZERO)
    return filled, (notional / filled if filled else None)


# --- SPOT guard stop (document compare-and-set) -------------------------------------------------------------


def load_guard(ctx: Context, intent_id: str) -> GuardStop | None:
    return from_doc(ctx.store.get(GUARDS, intent_id), GuardStop)


def guard_move(ctx: Context, intent_id: str, old: str, new: str, **patch: Any) -> bool:
    """ARMED -> FIRED | DISARMED as one compare-and-set: exactly one of racing monitors wins."""
    return ctx.store.update_if(GUARDS, intent_id, msgspec.to_builtins({"state": new, **patch}), {"state": old})


def disarm_guard(ctx: Context, intent_id: str) -> bool:
    """ARMED -> DISARMED (the TP filled, or the intent was cancelled). False if it already fired or never armed."""
    return guard_move(ctx, intent_id, "ARMED", "DISARMED", disarmed_at=ctx.now_ms())


# --- venue setup: leverage and margin type before the first entry ----------------------------------------------


def margin_type(ctx: Context) -> str:
    """``router.margin_type``, else the bundle's ``strategy.sizing.margin_type``, else ISOLATED."""
    sizing = (ctx.config.bundle.get("strategy") or {}).get("sizing") or {}
    return param(ctx, "margin_type", str(sizing.get("margin_type") or "ISOLATED")).upper()


def ensure_venue_setup(ctx: Context, intent: IntentDoc) -> str | None:
    """Set the intent's leverage and the bundle's margin type at the venue once per account and symbol.

    Recorded in ``venue_settings/<account>:FUT:<symbol>``; a later entry with the same values makes no
    call. Both calls are idempotent at the venue (the same leverage is accepted again; -4046 "no need to
    change margin type" is success), so a crash between them and the record only repeats them. Returns
    the refusal (the entry must not go out on settings we did not get), or None.
    """
    if intent.market != "FUT" or intent.reducing:
        return None
    account = intent.account_id
    mt, key = margin_type(ctx), f"{account}:FUT:{intent.symbol}"
    have = from_doc(ctx.store.get(coll.VENUE_SETTINGS, key), VenueSetting)
    if have is not None and have.leverage == intent.leverage and have.margin_type == mt:
        return None
    fut = client(ctx, intent)
    try:
        fut.set_margin_type(intent.symbol, mt)
        fut.set_leverage(intent.symbol, intent.leverage)
    except VenueRejected as exc:
        return f"VENUE_SETUP: {exc.code} {exc.msg}"
    ctx.store.upsert(coll.VENUE_SETTINGS, key, to_doc(VenueSetting(
        account_id=account, market="FUT", symbol=intent.symbol, leverage=intent.leverage, margin_type=mt,
        set_at=ctx.now_ms())))
    return None
