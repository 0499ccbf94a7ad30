"""S1's user data (``VenueReport``): a reduce-only order of ours (the exchange-side stop, a TP, an exit)
that filled at the venue, in part or in full, reduces or closes the position even if S4 never reported
it (S4 does not watch armed stops). Entries and adds are booked from S4's results. A report of the
venue's own closing order (liquidation ``autoclose-*``, ADL ``adl_autoclose``) closes the positions it
took, with the venue's realized PnL and fee (``positions.forced``). Every trade of one of our orders, entries
included, also puts the venue's commission and realized PnL on its position (``positions.money``).

The report does not name the position (a store read finds it), so there is no per-position lock for
it: the compare-and-set on the position's version orders it against results and passes."""

from __future__ import annotations

from chimera.handlers.positions import forced, lifecycle, money, stops
from chimera.handlers.positions.common import Out, create, load, open_positions
from chimera.handlers.positions.results import is_reducing
from chimera.schemas.documents.positions import Position
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
    if intent is None:
        return []  # not one of Chimera's orders (a manual order is the reconciler's business)
    reducing = is_reducing(intent)
    pos_id = intent.get("pos_id") or intent["intent_id"]
    pos = load(ctx, pos_id)
    if pos is None and not reducing and intent.get("purpose", "ENTRY") == "ENTRY":
        pos = _pending(ctx, pos_id, rep, intent)  # the trade's report came before S4's first result
    if pos is None:
        return []
    new, out = pos, []
    if reducing and pos.is_open:
        new, out = lifecycle.reduce(ctx, pos, rep.client_order_id, rep.cum_qty, rep.last_price or None,
                                    exit_intent_id=intent["intent_id"], purpose=intent.get("purpose", "EXIT"),
                                    source=f"venue:{rep.exec_type}:{rep.client_order_id}")
        new, more = stops.reconcile(ctx, new)
        out += more
    new = money.book_trade(new, rep)  # its fee and realized PnL, whatever the position's state
    lifecycle.write(ctx, pos, new)
    return out


def _pending(ctx: Context, pos_id: str, rep: VenueReport, intent: dict) -> Position:
    """The entry's position, PENDING_ENTRY, as S4's first result would create it (insert-if-absent)."""
    return create(ctx, Position(
        pos_id=pos_id, symbol=rep.symbol, side=intent.get("side") or rep.side, market="FUT",
        account_id=intent.get("account_id") or "main", entry_intent_id=intent["intent_id"],
        signal_id=intent.get("signal_id", ""), bundle_id=intent.get("bundle_id") or "",
        config_rev=int(intent.get("config_rev") or 0), leverage=int(intent.get("leverage") or 20)))


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
