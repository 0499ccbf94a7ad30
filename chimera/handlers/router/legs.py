"""One exchange order ("leg") of an intent, driven through ORDER_FSM with compare-and-set writes.

The exactly-once recipe (ARCHITECTURE §2.2), per leg:

1. the leg is written to ``orders`` as INITIALIZED (with its deterministic client id) before
   anything goes on the wire;
2. INITIALIZED -> SUBMITTED is written *before* the request is sent, so a worker that dies
   mid-request leaves SUBMITTED behind and the next delivery knows it must ask the venue;
3. timeout / 5xx / lost reply / 429 -> UNKNOWN; UNKNOWN is resolved by querying the client id.
   Found: adopt the venue's state. Not found: the request never executed, and only then is it
   sent again (same client id, so an open duplicate is still refused by the venue);
4. a duplicate-client-id rejection means the venue already has it: query and adopt.

Every status change goes through ``ORDER_FSM`` and ``store.update_if(expect=status)``; the
caller holds the per-intent lock, so a failed compare-and-set means another holder raced us
after a lock expiry: retry the entry rather than overwrite.
"""

from __future__ import annotations

import time
from decimal import Decimal

from loguru import logger

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.common import dec
from chimera.schemas.states import (
    ORDER_FSM,
    IllegalTransition,
    OrderEvent,
    OrderStatus,
    order_event_for_venue_status,
)
from chimera.venues.binance.adapter import (
    AlreadyAccepted,
    OrderNotFound,
    VenueOrder,
    VenueRateLimited,
    VenueRejected,
    VenueUnknown,
    client_order_id,
)

ORDERS = "orders"
QUERY_ATTEMPTS = 3
CAS_ATTEMPTS = 4


def leg_key(intent_id: str, leg: str) -> str:
    return f"{intent_id}:{leg}"


def new_leg_doc(intent: dict, leg: str, *, order_type: str, side: str, qty: Decimal, now_ms: int,
                price: Decimal | None = None, stop_price: Decimal | None = None, tif: str | None = None,
                reduce_only: bool = False, algo: bool = False, purpose: str | None = None,
                book: dict | None = None) -> dict:
    return {
        "intent_id": intent["intent_id"], "leg": leg, "client_order_id": client_order_id(intent["intent_id"], leg),
        "market": intent["market"], "symbol": intent["symbol"], "side": side, "type": order_type,
        "qty": str(qty), "price": None if price is None else str(price),
        "stop_price": None if stop_price is None else str(stop_price), "tif": tif, "reduce_only": reduce_only,
        "algo": algo, "purpose": purpose or intent.get("purpose", "ENTRY"), "pos_id": intent.get("pos_id", ""),
        "status": OrderStatus.INITIALIZED.value, "venue_order_id": "", "filled_qty": "0", "avg_price": None,
        "reason": "", "created_at": now_ms, "updated_at": now_ms, **(book or {}),
    }


def ensure_leg_doc(store, doc: dict) -> dict:
    """Persist the leg (INITIALIZED) unless it exists; return the stored version."""
    key = leg_key(doc["intent_id"], doc["leg"])
    store.insert_if_absent(ORDERS, key, doc)
    return store.get(ORDERS, key)


def _move(store, doc: dict, event: OrderEvent, now_ms: int, patch: dict | None = None, *,
          tolerate_illegal: bool = False) -> dict:
    """One ORDER_FSM step written with compare-and-set on the status.

    A lost compare-and-set means someone else moved the order first (a venue report, a holder
    whose lock expired): continue from the stored state when the event still applies there.
    ``tolerate_illegal`` (venue reports) logs a move the table forbids instead of raising.
    """
    key = leg_key(doc["intent_id"], doc["leg"])
    for attempt in range(CAS_ATTEMPTS):
        cur = OrderStatus(doc["status"])
        if not ORDER_FSM.can(cur, event):
            if tolerate_illegal:
                logger.warning("order {}: {} in state {} is not a legal move; ignored", key, event, cur)
                return doc
            if attempt == 0:
                raise PermanentError(f"order {doc['client_order_id']}: {IllegalTransition(cur, event)}")
            raise RetryableError(f"order {key} moved to {cur} under us; {event} no longer applies; retrying")
        new = ORDER_FSM.transition(cur, event)
        full = {**(patch or {}), "status": new.value, "updated_at": now_ms}
        if new == cur and all(doc.get(k) == v for k, v in full.items() if k != "updated_at"):
            return doc
        if store.update_if(ORDERS, key, full, {"status": cur.value}):
            return {**doc, **full}
        doc = store.get(ORDERS, key)
    raise RetryableError(f"order {key} keeps changing under us; retrying")


def adopt(store, doc: dict, vo: VenueOrder, now_ms: int) -> dict:
    """Apply what the venue says about the order (ack, fill, cancel...)."""
    event = order_event_for_venue_status(vo.status)
    patch: dict = {"venue_order_id": vo.venue_order_id or doc.get("venue_order_id", "")}
    if vo.filled_qty:
        patch["filled_qty"] = str(vo.filled_qty)
    if vo.avg_price:
        patch["avg_price"] = str(vo.avg_price)
    status = OrderStatus(doc["status"])
    if status == OrderStatus.INITIALIZED:  # adopted before we ever sent (e.g. a reconciler replay)
        doc = _move(store, doc, OrderEvent.ORDER_SUBMITTED, now_ms)
    if event == OrderEvent.ORDER_PARTIALLY_FILLED and status in (OrderStatus.SUBMITTED, OrderStatus.UNKNOWN):
        doc = _move(store, doc, OrderEvent.ORDER_ACCEPTED, now_ms)
    return _move(store, doc, event, now_ms, patch)


def _query(client, doc: dict) -> VenueOrder:
    """Query by client id with a short in-handler retry: a 5xx on a *read* is harmless to repeat."""
    last: Exception | None = None
    for attempt in range(QUERY_ATTEMPTS):
        try:
            return client.query(doc["symbol"], doc["client_order_id"], algo=doc.get("algo", False))
        except (VenueUnknown, VenueRateLimited) as exc:
            last = exc
            time.sleep(0.05 * (attempt + 1))
    raise RetryableError(f"cannot resolve {doc['client_order_id']}: {last}")


def _send(client, doc: dict) -> VenueOrder:
    qty = dec(doc["qty"])
    if doc.get("algo"):
        return client.new_stop(symbol=doc["symbol"], side=doc["side"], type=doc["type"], qty=qty,
                               trigger=dec(doc["stop_price"]), client_id=doc["client_order_id"])
    kw: dict = {}
    if doc.get("stop_price") and doc["market"] == "SPOT":
        kw["stop_price"] = dec(doc["stop_price"])
    return client.new_order(symbol=doc["symbol"], side=doc["side"], type=doc["type"], qty=qty,
                            client_id=doc["client_order_id"], price=dec(doc.get("price")), tif=doc.get("tif"),
                            reduce_only=doc.get("reduce_only", False), **kw)


def place(store, client, doc: dict, now_ms: int, hooks: dict | None = None) -> dict:
    """Drive the leg until the venue has it (or refused it). Returns the updated document."""
    status = OrderStatus(doc["status"])
    if status == OrderStatus.INITIALIZED:
        doc = _move(store, doc, OrderEvent.ORDER_SUBMITTED, now_ms)
        if hooks and hooks.get("after_submitted"):
            hooks["after_submitted"](doc)  # tests: crash between persist and send
        return _send_and_apply(store, client, doc, now_ms)
    if status == OrderStatus.SUBMITTED:
        # A previous attempt died mid-request: its outcome is unknown, never assume either way.
        doc = _move(store, doc, OrderEvent.ORDER_TIMED_OUT, now_ms, {"reason": "resumed after crash"})
        status = OrderStatus.UNKNOWN
    if status == OrderStatus.UNKNOWN:
        return resolve(store, client, doc, now_ms)
    return doc


def resolve(store, client, doc: dict, now_ms: int) -> dict:
    try:
        vo = _query(client, doc)
    except OrderNotFound:
        logger.info("order {} never reached the venue; sending it now", doc["client_order_id"])
        return _send_and_apply(store, client, doc, now_ms)
    return adopt(store, doc, vo, now_ms)


def _send_and_apply(store, client, doc: dict, now_ms: int) -> dict:
    try:
        vo = _send(client, doc)
    except AlreadyAccepted:
        return adopt(store, doc, _query(client, doc), now_ms)
    except (VenueUnknown, VenueRateLimited) as exc:
        if OrderStatus(doc["status"]) == OrderStatus.SUBMITTED:
            doc = _move(store, doc, OrderEvent.ORDER_TIMED_OUT, now_ms, {"reason": str(exc)[:200]})
        if isinstance(exc, VenueRateLimited):
            raise RetryableError(f"rate limited sending {doc['client_order_id']}") from exc
        return resolve(store, client, doc, now_ms)
    except VenueRejected as exc:
        return _move(store, doc, OrderEvent.ORDER_REJECTED, now_ms,
                     {"reason": f"{exc.code}: {exc.msg}", "reject_code": exc.code})
    return adopt(store, doc, vo, now_ms)


def refresh(store, client, doc: dict, now_ms: int) -> dict:
    """Ask the venue for the leg's current state (live legs only)."""
    if ORDER_FSM.is_terminal(OrderStatus(doc["status"])) and doc["status"] != OrderStatus.CANCELED.value:
        return doc
    if doc["status"] == OrderStatus.INITIALIZED.value:
        return doc
    return adopt(store, doc, _query(client, doc), now_ms)


def cancel(store, client, doc: dict, now_ms: int) -> dict:
    """Cancel a live leg and return its final state (a fill that beat the cancel wins)."""
    status = OrderStatus(doc["status"])
    if ORDER_FSM.is_terminal(status):
        return doc
    if status in (OrderStatus.UNKNOWN, OrderStatus.SUBMITTED):
        doc = place(store, client, doc, now_ms)
        if ORDER_FSM.is_terminal(OrderStatus(doc["status"])):
            return doc
    if ORDER_FSM.can(OrderStatus(doc["status"]), OrderEvent.ORDER_CANCEL_REQUESTED):
        doc = _move(store, doc, OrderEvent.ORDER_CANCEL_REQUESTED, now_ms)
    try:
        client.cancel(doc["symbol"], doc["client_order_id"], algo=doc.get("algo", False))
    except (OrderNotFound, VenueUnknown, VenueRateLimited, VenueRejected) as exc:
        # Unknown order: it filled or ended before the cancel landed. Lost reply: it may have
        # been canceled. Either way the query below is the truth.
        logger.info("cancel {}: {}; querying", doc["client_order_id"], exc)
    vo = _query(client, doc)
    if vo.status in ("NEW", "PARTIALLY_FILLED", "TRIGGERED") and doc["status"] == OrderStatus.PENDING_CANCEL.value:
        # Still live at the venue after our cancel: back to UNKNOWN, the entry is retried.
        _move(store, doc, OrderEvent.ORDER_CANCEL_REJECTED, now_ms)
        raise RetryableError(f"cancel of {doc['client_order_id']} did not take; retrying")
    return adopt(store, doc, vo, now_ms)
