"""S4's ``OrderResult`` for a position's orders: entries and adds grow it (or fail it), stops arm or are
refused, reduce-only orders shrink or close it, take-profit rungs and adds leave "in flight"."""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.common import dec
from chimera.handlers.positions import adds, ladder, lifecycle, protection, stops
from chimera.handlers.positions.common import PE, Out, event, load, moved
from chimera.schemas.documents.positions import Position
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import OrderResult
from chimera.schemas.states import PositionStatus as P
from chimera.store.collections import ORDER_INTENTS, ORDERS
from chimera.workers.handler import Context

CLOSING_PURPOSES = {"STOP", "EXIT", "FLATTEN", "TAKE_PROFIT", "REDUCE"}
ENDED = ("FILLED", "PARTIALLY_FILLED", "CANCELED", "EXPIRED", "REJECTED")
GONE = ("CANCELED", "EXPIRED", "REJECTED")


def is_reducing(intent: dict) -> bool:
    return bool(intent.get("reduce_only")) or intent.get("purpose") in CLOSING_PURPOSES


def on_result(env: Envelope, ctx: Context) -> Out:
    res: OrderResult = env.payload
    intent = ctx.store.get(ORDER_INTENTS, res.intent_id) or {}
    pos_id = lifecycle.pos_id_of(res)
    pos = load(ctx, pos_id)
    if res.purpose in ("ENTRY", "ADD"):
        if pos is None and res.purpose == "ENTRY":
            pos = lifecycle.pending(ctx, res, intent)
        if pos is None:
            return []
        new, out = _entry(ctx, pos, res, intent)
    elif pos is None:
        return []
    elif res.purpose == "STOP" and res.status != "FILLED":
        new, out = stops.on_result(ctx, pos, res) if pos.is_open else (pos, [])
    elif protection.is_order(pos, res.intent_id) and res.status != "FILLED":
        new, out = protection.on_result(pos, res)
    else:
        new, out = pos, []
        if is_reducing(intent or {"purpose": res.purpose}) and res.status in ENDED:
            new, out = _reduce(ctx, pos, res)
        if res.purpose == "TAKE_PROFIT":
            new = ladder.on_result(new, res)  # after the stop for the rest is (being) placed
    lifecycle.write(ctx, pos, new)
    return out


def _entry(ctx: Context, pos: Position, res: OrderResult, intent: dict) -> tuple[Position, Out]:
    new, out = pos, []
    if res.filled_qty > 0 and res.status in ENDED:
        new, out = lifecycle.grow(ctx, pos, res, intent)
    elif res.purpose == "ENTRY" and pos.state == P.PENDING_ENTRY and res.status in GONE and _ended_unfilled(intent):
        new, out = lifecycle.entry_failed(ctx, pos, f"{res.status}: {res.reason}".strip(": "))
    if res.purpose == "ADD":
        # The add leaves "in flight" only after the stop for the new qty is (being) placed.
        new = adds.on_result(new, res)
    return new, out


def _ended_unfilled(intent: dict) -> bool:
    """S4 recorded the intent's final result and nothing filled (a maker leg expiring is not the end)."""
    final = intent.get("result") or {}
    return intent.get("phase") == "DONE" and final.get("status") in GONE and not dec(final.get("filled_qty"))


def _reduce(ctx: Context, pos: Position, res: OrderResult) -> tuple[Position, Out]:
    """Book what a reduce-only intent filled, per exchange order (S4's ``orders`` of the intent)."""
    if pos.state == P.CLOSED:
        # A redelivered closing result (e.g. after a crash before the orders went out): send the tail again.
        return pos, lifecycle.close_tail(pos) if res.intent_id == pos.exit_intent_id else []
    if not pos.is_open:
        return pos, []
    legs = [d for d in ctx.store.query(ORDERS, {"intent_id": res.intent_id}) if dec(d.get("filled_qty"))]
    # An algo stop reported filled carries no leg fills: flat. A SPOT exit (S4's guard) sells what is held,
    # which is the entry less the fee paid in the base asset: flat too.
    if res.status == "FILLED" and (not legs or pos.market == "SPOT"):
        return lifecycle.close(ctx, pos, exit_price=res.avg_price, exit_intent_id=res.intent_id,
                               reason=lifecycle.EXIT_REASON.get(res.purpose, "EXIT"))
    out: Out = []
    for leg in legs:
        pos, emits = lifecycle.reduce(ctx, pos, leg["client_order_id"], Decimal(leg["filled_qty"]),
                                      dec(leg.get("avg_price")), exit_intent_id=res.intent_id, purpose=res.purpose,
                                      source="result")
        out += emits
        if pos.state == P.CLOSED:
            return pos, out
    if res.purpose in ("EXIT", "FLATTEN") and res.status in GONE and pos.state == P.PENDING_CLOSING:
        # A refused reduce-only exit: ask the venue whether there is still anything to close.
        gone = lifecycle.gone_at_venue(ctx, pos, f"exit {res.intent_id} {res.status} ({res.reason})")
        if gone is not None:
            return gone[0], out + gone[1]
        pos = moved(pos, PE.CLOSE_FAILED)  # still exposed: back to ACTIVE, the stop stays
        out += [event(pos, "CLOSE_FAILED", tag=res.intent_id),
                protection.alert(pos, "EXIT_REFUSED", f"exit {res.intent_id} of {pos.pos_id} {res.status} "
                                 f"({res.reason}); the position is still open at the venue", res.intent_id)]
    pos, more = stops.reconcile(ctx, pos)
    return pos, out + more
