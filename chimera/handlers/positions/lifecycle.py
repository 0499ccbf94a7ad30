"""A position's life: entry and add fills grow it, reduce-only fills shrink it, the last one closes it.
Every change re-checks the exchange-side stop (``stops.reconcile``), so the stop follows the qty: new
stop for the new qty first, old one cancelled once the new one is ACCEPTED.

Fills count once however often they are delivered: entries/adds by intent (``fills_in``: the intent's
cumulative qty and notional), reductions by exchange order (``fills_out``: the order's cumulative qty),
which is what both S4's results (via its ``orders`` documents) and S1's venue reports carry, so a
report and a result for the same fill reduce the position once.

The functions here compute the next version of a position and the orders/events that go with it; the
caller writes it (``common.save``). S5 repairs positions through ``adopt``, ``close_reconciled`` and
``set_qty`` below, so every write to ``positions`` goes through S6's code and its compare-and-set.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.common import dec, venue
from chimera.handlers.positions import forced, protection, stops
from chimera.handlers.positions.common import (
    PE,
    ZERO,
    Conflict,
    Out,
    create,
    event,
    moved,
    risk,
    save,
    snapshot,
)
from chimera.schemas.documents.positions import Position, replace
from chimera.schemas.messages import OrderResult
from chimera.schemas.states import PositionStatus as P
from chimera.store.collections import ORDERS
from chimera.venues.binance.adapter import VenueError
from chimera.workers.handler import Context

EXIT_REASON = {"STOP": "STOP_LOSS", "TAKE_PROFIT": "TAKE_PROFIT", "EXIT": "EXIT", "FLATTEN": "FLATTEN",
               "REDUCE": "EXIT"}


def pos_id_of(res: OrderResult) -> str:
    return res.pos_id or res.intent_id


def pending(ctx: Context, res: OrderResult, intent: dict) -> Position:
    """The position of an entry S4 is working on: created PENDING_ENTRY on its first result."""
    return create(ctx, Position(
        pos_id=pos_id_of(res), symbol=res.symbol, side=res.side or intent.get("side") or "BUY",
        market=intent.get("market", "FUT"), account_id=intent.get("account_id", "main"),
        entry_intent_id=res.intent_id, signal_id=intent.get("signal_id", ""),
        bundle_id=intent.get("bundle_id") or "", config_rev=int(intent.get("config_rev") or 0),
        leverage=int(intent.get("leverage") or 20)))


# --- growth: entry and add fills ------------------------------------------------------------------------


def intent_fill(ctx: Context, res: OrderResult) -> tuple[Decimal, Decimal]:
    """(qty, notional) the intent has filled so far, over all its exchange orders (S4's ``orders``, written
    before any result): a TWAP slice's or a maker leg's result carries only its own leg's fill, the
    intent's final result the total. Without legs (a result from elsewhere), the result's own figures."""
    qty = notional = ZERO
    for leg in ctx.store.query(ORDERS, {"intent_id": res.intent_id}):
        q, p = dec(leg.get("filled_qty")) or ZERO, dec(leg.get("avg_price"))
        if q and p:
            qty, notional = qty + q, notional + q * p
    if qty >= res.filled_qty:
        return qty, notional
    return res.filled_qty, res.filled_qty * (res.avg_price or ZERO)


def grow(ctx: Context, pos: Position, res: OrderResult, intent: dict) -> tuple[Position, Out]:
    """Book what the entry/add intent has filled by now (once, whichever result says it), then let the
    stop follow."""
    if pos.state != P.PENDING_ENTRY and not pos.is_open:
        # A late entry fill on a closed position (e.g. a TWAP's final result after its stop filled): what the
        # venue still holds, if anything, is S5's to find.
        logger.warning("position {}: entry fill of {} after it was {}; left to the reconciler", pos.pos_id,
                       res.intent_id, pos.state)
        return pos, []
    cum_qty, notional = intent_fill(ctx, res)
    seen_qty, seen_notional = pos.fills_in.get(res.intent_id, (ZERO, ZERO))
    dq = cum_qty - seen_qty
    if dq <= 0 or not notional:
        # Already booked (a redelivery, maybe after a crash before the orders went out): send them again.
        if not pos.is_open:
            return pos, []
        again = [event(pos, "OPENED")] if res.intent_id == pos.entry_intent_id else []
        pos, out = stops.reconcile(ctx, pos)
        return pos, again + out
    qty = pos.qty + dq
    entry = (pos.qty * (pos.entry_price or ZERO) + notional - seen_notional) / qty
    fills_in = {**pos.fills_in, res.intent_id: (cum_qty, notional)}
    if pos.state == P.PENDING_ENTRY:  # nothing booked yet: qty == dq == res.filled_qty
        pos = moved(pos, PE.ENTRY_FILLED, qty=qty, entry_price=entry, entry0=entry, base_qty=qty, gross_qty=qty,
                    fills_in=fills_in, leverage=int(intent.get("leverage") or pos.leverage), trail_step=0)
        out: Out = [event(pos, "OPENED")]
        if pos.market != "FUT":
            return pos, out  # S4 protects a SPOT entry itself (OCO, separate TP/SL or its guard stop)
        pos = protection.first(ctx, pos, intent)
    else:
        pos = moved(pos, PE.ENTRY_FILLED, qty=qty, entry_price=entry, fills_in=fills_in, gross_qty=pos.gross_qty + dq)
        out = [event(pos, "ADDED", tag=f"{res.intent_id}:{cum_qty}")]
    pos, more = stops.reconcile(ctx, pos)
    pos, tp = protection.place_take_profit(ctx, pos)
    return pos, out + more + tp


def entry_failed(ctx: Context, pos: Position, reason: str) -> tuple[Position, Out]:
    """The entry ended without any fill: FAILED, and S3's reservation goes back."""
    pos = moved(pos, PE.ENTRY_FAILED, close_reason="ENTRY_FAILED", closed_at=ctx.now_ms(), closed_by=reason)
    return pos, [event(pos, "FAILED", tag=reason)]


# --- reduction and close ----------------------------------------------------------------------------


def reduce(ctx: Context, pos: Position, client_order_id: str, cum_qty: Decimal, price: Decimal | None, *,
           exit_intent_id: str, purpose: str, source: str) -> tuple[Position, Out]:
    """Book a reduce-only order's cumulative fill: REDUCED or, when flat, CLOSED. The caller then lets
    the stop follow (``stops.reconcile``) while the position is open."""
    delta = cum_qty - pos.fills_out.get(client_order_id, ZERO)
    if delta <= 0 or not pos.is_open:
        return pos, []
    fills_out = {**pos.fills_out, client_order_id: cum_qty}
    # The events carry S6's estimate, from S6's own fills: known when the fill is, whichever of the venue's
    # report and S4's result comes first. The document's realized PnL is the venue's, booked per trade from
    # its reports (positions.money), so the books match the venue to 1e-8 USDT.
    pnl = pos.est_realized_pnl
    if price is not None and pos.entry_price is not None:
        pnl += (price - pos.entry_price) * min(delta, pos.qty) * pos.direction
    left = pos.qty - delta
    pos = replace(pos, fills_out=fills_out, est_realized_pnl=pnl)
    if left <= 0:
        return close(ctx, pos, exit_price=price, exit_intent_id=exit_intent_id, reason=EXIT_REASON.get(purpose, "EXIT"),
                     source=source)
    pos = moved(pos, PE.POSITION_REDUCED, qty=left)
    return pos, [event(pos, "REDUCED", tag=f"{client_order_id}:{cum_qty}", exit_price=price, realized_pnl=pnl)]


def close(ctx: Context, pos: Position, *, exit_price: Decimal | None, exit_intent_id: str, reason: str,
          source: str = "result", venue_pnl: Decimal = ZERO, venue_fee: Decimal = ZERO) -> tuple[Position, Out]:
    """Flat: POSITION_FSM → CLOSED, every stop still live cancelled except the one that filled, EXIT.
    ``venue_pnl``/``venue_fee``: the venue's figures of a closing trade no report books (a liquidation
    S5 or S6 found, from the force order). The caller writes it, then ``after_close`` gives S3's
    reservation back."""
    pos = moved(pos, PE.POSITION_CLOSED, qty=ZERO, exit_intent_id=exit_intent_id, closed_by=source,
                exit_price=exit_price, close_reason=reason, closed_at=ctx.now_ms(),
                realized_pnl=pos.realized_pnl + venue_pnl, est_realized_pnl=pos.est_realized_pnl + venue_pnl,
                fees=pos.fees + venue_fee)
    return pos, close_tail(pos)


def close_tail(pos: Position) -> Out:
    """What a close sends: cancel every stop that may still rest (the filled one aside), the EXIT event.
    Sent again by a redelivered closing message (cancels and events are keyed, so once in effect)."""
    out: Out = [stops.cancel(pos, iid, "position closed") for iid in pos.stop.live_intents()
                if iid != pos.exit_intent_id]
    out += protection.cancel_take_profit(pos, "position closed")
    return out + [event(pos, "EXIT", exit_price=pos.exit_price, realized_pnl=pos.est_realized_pnl)]


def after_write(ctx: Context, before: Position, after: Position) -> None:
    """Side effects once a version is stored: snapshots worth keeping, and the budget back at the end."""
    if before.state == P.PENDING_ENTRY and after.state == P.ACTIVE:
        snapshot(ctx, after, "opened")
    elif after.state == P.ACTIVE and after.qty > before.qty and before.is_open:
        snapshot(ctx, after, f"grown:{after.version}")
    elif after.qty < before.qty and after.is_open:
        snapshot(ctx, after, f"reduced:{after.version}")
    if after.stop.level > before.stop.level or (after.stop.intent_id and after.stop.intent_id != before.stop.intent_id):
        snapshot(ctx, after, f"sl{after.stop.level}")
    if after.state in (P.CLOSED, P.FAILED) and before.state != after.state:
        snapshot(ctx, after, "closed" if after.state == P.CLOSED else "failed")
    if after.state in (P.CLOSED, P.FAILED, P.ROLLED_BACK):
        release_budget(ctx, after)


def release_budget(ctx: Context, pos: Position) -> None:
    """Give back S3's margin/concurrency reservation, adds included (idempotent per pos_id)."""
    try:
        risk(ctx).release(pos.pos_id, pos.symbol, pos.account_id)  # the account whose budget holds it
    except Exception as exc:  # noqa: BLE001 - a wrong-symbol reservation must surface, not block the close
        logger.error("budget release for {} failed: {}", pos.pos_id, exc)


def write(ctx: Context, before: Position, after: Position) -> Position:
    """``save`` plus ``after_write``: the one way S6 (and S5 through it) stores a new version."""
    stored = save(ctx, before, after)
    if stored is not before:
        after_write(ctx, before, stored)
    return stored


def gone_at_venue(ctx: Context, pos: Position, why: str) -> tuple[Position, Out] | None:
    """The venue holds nothing on the position's side any more (liquidated, auto-deleveraged, or closed
    outside Chimera): CLOSED with what the venue says happened, and an ERROR alert. None when the venue
    still holds it or cannot be asked."""
    fut = venue(ctx, pos.account_id).fut
    try:
        rows = fut.position_risk(pos.symbol)
        amt = sum((Decimal(str(r.get("positionAmt") or 0)) for r in rows), ZERO) * pos.direction
        if amt > 0:
            return None
        got = forced.claim(ctx, fut, pos.symbol, pos.side, [pos], account_id=pos.account_id,
                           claimed_by=f"s6:{pos.pos_id}")
    except VenueError as exc:
        logger.warning("position {}: cannot ask the venue what happened ({})", pos.pos_id, exc)
        return None
    if got is None:
        after, out = close(ctx, pos, exit_price=None, exit_intent_id="", reason="CLOSED_AT_VENUE", source="venue")
        what = "flat at the venue, no force order explains it"
    else:
        after, out = close(ctx, pos, exit_price=got.avg_price, exit_intent_id="", reason=got.kind,
                           source=f"venue:{got.client_order_id}", venue_pnl=got.realized_pnl, venue_fee=got.fee)
        what = f"{got.kind} at {got.avg_price} (force order {got.order_id}, realized {got.realized_pnl})"
    return after, [*out, protection.alert(after, "POSITION_GONE_AT_VENUE", f"position {pos.pos_id} ({pos.qty} "
                                                   f"{pos.symbol}): {why}; {what}", after.close_reason)]


# --- S5's repairs (the reconciler writes positions only through these) ---------------------------------


def adopt(ctx: Context, pos_id: str, *, symbol: str, side: str, qty: Decimal, entry: Decimal | None,
          intent_id: str, intent: dict, sl_price: Decimal | None, account_id: str) -> tuple[Position | None, Out]:
    """A filled entry S6 never booked (crash between fill and S6): ACTIVE with the fill as its entry and
    the stop S6 would have placed (same intent ``<pos_id>:sl1``: S4 places it once whoever asks first).
    None when S6 booked it meanwhile."""
    base = Position(pos_id=pos_id, symbol=symbol, side=side, account_id=account_id, entry_intent_id=intent_id,
                    signal_id=intent.get("signal_id", ""), leverage=int(intent.get("leverage") or 20))
    cur = create(ctx, base)
    if cur.state != P.PENDING_ENTRY:
        return None, []
    notional = qty * entry if entry else ZERO
    pos = moved(cur, PE.POSITION_ADOPTED, qty=qty, entry_price=entry, entry0=entry, base_qty=qty, gross_qty=qty,
                fills_in={intent_id: (qty, notional)}, sl_price=sl_price, adopted_by="reconciler",
                account_id=account_id)
    pos, out = stops.reconcile(ctx, pos)
    try:
        pos = write(ctx, cur, pos)
    except Conflict:  # S6 got there first
        return None, []
    return pos, [event(pos, "ADOPTED", sl_price=sl_price, tag=pos_id), *out]


def close_reconciled(ctx: Context, pos: Position, action: str, *, exit_price: Decimal | None = None,
                     exit_intent_id: str = "", reason: str = "RECONCILED", realized_pnl: Decimal | None = None,
                     fee: Decimal = ZERO) -> tuple[Position | None, Out]:
    """S5 proved the position flat at the venue (``realized_pnl``/``fee``: the venue's for the closing
    trades, e.g. a liquidation's). None when it moved meanwhile (S6 wrote it first)."""
    if not pos.is_open:
        return None, []
    after, out = close(ctx, pos, exit_price=exit_price, exit_intent_id=exit_intent_id, reason=reason,
                       source="reconciler", venue_pnl=realized_pnl or ZERO, venue_fee=fee)
    after = replace(after, reconcile=action)
    try:
        return write(ctx, pos, after), out
    except Conflict:
        return None, []


def set_qty(ctx: Context, pos: Position, qty: Decimal) -> Position | None:
    """S5: the venue's quantity wins; the stop is resized on S6's next pass. None when it moved meanwhile."""
    try:
        return write(ctx, pos, replace(pos, qty=qty, reconcile="QTY_FIXED"))
    except Conflict:
        return None
