"""S1's user data (``VenueReport``): a reduce-only order of ours (the exchange-side stop, a TP, an exit)
that filled at the venue, in part or in full, reduces or closes the position even if S4 never reported
it (S4 does not watch armed stops). Entries and adds are booked from S4's results. A report of the
venue's own closing order (liquidation ``autoclose-*``, ADL ``adl_autoclose``) closes the positions it
took, with the venue's realized PnL and fee (``positions.forced``).

The report does not name the position (a store read finds it), so there is no per-position lock for
it: the compare-and-set on the position's version orders it against results and passes."""

from __future__ import annotations

from chimera.handlers.positions import forced, lifecycle, stops
from chimera.handlers.positions.common import Out, load, open_positions
from chimera.handlers.positions.results import is_reducing
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import VenueReport
from chimera.store.collections import ORDER_INTENTS, ORDERS
from chimera.workers.handler import Context


def on_report(env: Envelope, ctx: Context) -> Out:
    rep: VenueReport = env.payload
    if rep.market != "FUT" or rep.exec_type not in ("TRADE", "CALCULATED") or rep.cum_qty <= 0:
        return []
    if forced.is_force_order(rep.client_order_id):
        return _forced(ctx, rep)
    rows = ctx.store.query(ORDERS, {"client_order_id": rep.client_order_id}, limit=1)
    intent = ctx.store.get(ORDER_INTENTS, rows[0]["intent_id"]) if rows else None
    if intent is None or not is_reducing(intent):
        return []  # not one of Chimera's exits (a manual order or a liquidation is the reconciler's business)
    pos = load(ctx, intent.get("pos_id") or intent["intent_id"])
    if pos is None or not pos.is_open:
        return []
    new, out = lifecycle.reduce(ctx, pos, rep.client_order_id, rep.cum_qty, rep.last_price or None,
                                exit_intent_id=intent["intent_id"], purpose=intent.get("purpose", "EXIT"),
                                source=f"venue:{rep.exec_type}:{rep.client_order_id}")
    new, more = stops.reconcile(ctx, new)
    lifecycle.write(ctx, pos, new)
    return out + more


def _forced(ctx: Context, rep: VenueReport) -> Out:
    """The venue liquidated or deleveraged our side of ``rep.symbol``: close what it took (once flat)."""
    if rep.order_status != "FILLED":
        return []  # a part: the rest follows, and S5 reconciles what stays
    side = "SELL" if rep.side == "BUY" else "BUY"  # the force order closes the opposite side
    out: Out = []
    for pos in open_positions(ctx, rep.symbol):
        if pos.side != side:
            continue
        gone = lifecycle.gone_at_venue(ctx, pos, f"the venue's {rep.client_order_id} filled")
        if gone is not None:
            lifecycle.write(ctx, pos, gone[0])
            out += gone[1]
    return out
