"""S6: protect every futures position at the exchange, manage it (trailing stop, take-profit ladder,
add-ons, auto-transfer), and close it cleanly.

Consumes ``ord:{results}`` (S4's outcomes), ``pos:{commands}`` (management ticks and per-position
passes), ``venue:{reports}`` (S1 user data) and the perp market streams (mark prices). Every
action on a position runs under ``lock:{pos}:<pos_id>``. Orders go to S4 as ``SubmitOrder`` /
``CancelOrder`` on ``ord:{commands}`` with intent ids derived from the pos_id (``:sl<n>``,
``:tp<i>``, ``:add<k>``, ``:flatten``), so a redelivered message never produces a second order.

This module only dispatches; see ``lifecycle`` (fills → size, close), ``stops`` (the stop follows
the position, new before old), ``manage`` (one position's pass), ``trailing``, ``ladder``,
``adds``, ``marks``, ``tick``, ``transfer``.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.common import dec
from chimera.handlers.positions import adds, ladder, manage, marks, stops, tick
from chimera.handlers.positions.common import OPEN_STATES, POSITIONS, move, position_lock
from chimera.handlers.positions.lifecycle import close_position, grow, pos_id_of, reduce
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import ManagePositions, MarkPrice, OrderResult, VenueReport
from chimera.schemas.states import PositionEvent as PE
from chimera.schemas.states import PositionStatus as P
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

CLOSING_PURPOSES = {"STOP", "EXIT", "FLATTEN", "TAKE_PROFIT", "REDUCE"}
ENDED = ("FILLED", "PARTIALLY_FILLED", "CANCELED", "EXPIRED", "REJECTED")
GONE = ("CANCELED", "EXPIRED", "REJECTED")

__all__ = ["handle", "pos_id_of"]


def handle(env: Envelope, ctx: Context) -> list[Emit]:
    p = env.payload
    if isinstance(p, OrderResult):
        return on_result(ctx, p)
    if isinstance(p, ManagePositions):
        return manage.run(env, ctx, p) if p.pos_id else tick.run(env, ctx, p)
    if isinstance(p, VenueReport):
        return on_venue_report(ctx, p)
    if isinstance(p, MarkPrice):
        return marks.on_mark(ctx, p)
    return []  # the rest of the perp market stream (book, trades, klines) is not S6's business


def is_reducing(intent: dict) -> bool:
    return bool(intent.get("reduce_only")) or intent.get("purpose") in CLOSING_PURPOSES


def on_result(ctx: Context, res: OrderResult) -> list[Emit]:
    intent = ctx.store.get("order_intents", res.intent_id) or {}
    if intent.get("market", "FUT") != "FUT":
        return []  # spot protection is S4's OCO/guard path
    if res.purpose in ("ENTRY", "ADD"):
        if res.filled_qty > 0 and res.status in ENDED:
            return grow(ctx, res, intent)
        if res.purpose == "ADD":
            adds.on_result(ctx, pos_id_of(res), res)
        return []
    pos = ctx.store.get(POSITIONS, pos_id_of(res))
    if pos is None:
        return []
    if res.purpose == "STOP" and res.status != "FILLED":
        return stops.on_result(ctx, pos, res) if pos["state"] in OPEN_STATES else []
    out = []
    if is_reducing(intent or {"purpose": res.purpose}) and res.status in ENDED:
        out = on_reduce_result(ctx, pos, res)
    if res.purpose == "TAKE_PROFIT" and ctx.store.get(POSITIONS, pos["_key"])["state"] in OPEN_STATES:
        ladder.on_result(ctx, pos["_key"], res)  # after the stop for the rest is (being) placed
    return out


def on_reduce_result(ctx: Context, pos: dict, res: OrderResult) -> list[Emit]:
    """Book what a reduce-only intent filled, per exchange order (S4's ``orders`` of the intent)."""
    if pos["state"] == P.CLOSED.value:
        return close_position(ctx, pos, exit_price=res.avg_price, exit_intent_id=res.intent_id)
    if pos["state"] not in OPEN_STATES:
        return []
    legs = [d for d in ctx.store.query("orders", {"intent_id": res.intent_id}) if dec(d.get("filled_qty"))]
    if not legs and res.status == "FILLED":  # an algo stop reported filled carries no leg fills: flat
        return close_position(ctx, pos, exit_price=res.avg_price, exit_intent_id=res.intent_id)
    out: list[Emit] = []
    for leg in legs:
        pos, emits = reduce(ctx, pos, leg["client_order_id"], Decimal(leg["filled_qty"]), dec(leg.get("avg_price")),
                            exit_intent_id=res.intent_id, source="result")
        out += emits
        if pos["state"] == P.CLOSED.value:
            return out
    if res.purpose in ("EXIT", "FLATTEN") and res.status in GONE and pos["state"] == P.PENDING_CLOSING.value:
        pos = move(ctx, pos, PE.CLOSE_FAILED)  # still exposed: back to ACTIVE, the stop stays
    return out + stops.reconcile(ctx, pos)


def _order_of(ctx: Context, client_order_id: str) -> dict | None:
    rows = ctx.store.query("orders", {"client_order_id": client_order_id}, limit=1)
    return rows[0] if rows else None


def on_venue_report(ctx: Context, rep: VenueReport) -> list[Emit]:
    """S1's user data: a reduce-only order of ours (the exchange-side stop, a TP, an exit) that filled at
    the venue, in part or in full, reduces or closes the position even if S4 never reported it (S4
    does not watch armed stops). Entries and adds are booked from S4's results."""
    if rep.market != "FUT" or rep.exec_type not in ("TRADE", "CALCULATED") or rep.cum_qty <= 0:
        return []
    order = _order_of(ctx, rep.client_order_id)
    intent = ctx.store.get("order_intents", order["intent_id"]) if order else None
    if intent is None or not is_reducing(intent):
        return []  # not one of Chimera's exits (a manual order is the reconciler's business)
    pos_id = intent.get("pos_id") or intent["intent_id"]
    with position_lock(ctx, pos_id):
        pos = ctx.store.get(POSITIONS, pos_id)
        if pos is None or pos["state"] not in OPEN_STATES:
            return []
        pos, out = reduce(ctx, pos, rep.client_order_id, rep.cum_qty, rep.last_price or None,
                          exit_intent_id=intent["intent_id"], source=f"venue:{rep.exec_type}:{rep.client_order_id}")
        return out + stops.reconcile(ctx, pos)
