"""S4's reading of ``venue:{reports}``: venue-side changes to S4's own orders (S1 user data).

An exchange-side stop that triggers and fills, a cancel or an expiry by the venue: nothing S4 sent
causes them, so only the user-data report moves the ``orders`` document (ORDER_FSM, compare-and-set
on the status) and books the trade in ``fills`` (key ``<market>:<symbol>:<trade id>``, insert-if-absent:
a report delivered twice books the trade once). Reports race S4's own REST answers for the same order;
whichever writes second finds the status moved and continues from there (``toolkit.move``). A report the
table cannot apply (stale, or contradicting a newer state) is logged and dropped, never a failure.

Reports for client ids S4 does not know (manual orders, liquidations) are the reconciler's business.
No OrderResult is emitted from here: S6 reads the same reports for the position side.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.router import toolkit as tk
from chimera.schemas.documents.orders import OrderLeg, from_doc, to_doc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import TimerFired, VenueReport
from chimera.schemas.states import order_event_for_venue_status
from chimera.workers.handler import Context


def on_report(env: Envelope, ctx: Context) -> tk.Out:
    rep: VenueReport = env.payload
    rows = ctx.store.query(tk.ORDERS, {"client_order_id": rep.client_order_id}, limit=1)
    if not rows:
        logger.debug("report for {} (not an S4 order) skipped", rep.client_order_id)
        return []
    doc = from_doc(rows[0], OrderLeg)
    if doc.account_id != (env.account_id or "main"):
        # Another account's stream never moves this order (same client id at two accounts: not ours).
        logger.warning("report for {} from account {} ignored: the order belongs to {}", rep.client_order_id,
                       env.account_id, doc.account_id)
        return []
    if rep.exec_type == "TRADE" and rep.trade_id and rep.last_qty:
        intent = tk.load_intent(ctx, doc.intent_id)
        ctx.store.insert_if_absent(tk.FILLS, tk.fill_key(doc, rep.trade_id), to_doc(tk.fill_doc(
            intent, doc, trade_id=rep.trade_id, price=rep.last_price, qty=rep.last_qty, fee=rep.commission,
            fee_asset=rep.commission_asset or "USDT", is_maker=rep.is_maker, ts=rep.ts)))
    try:
        event = order_event_for_venue_status(rep.order_status)
    except KeyError:
        logger.warning("report for {} has unknown status {!r}; skipped", rep.client_order_id, rep.order_status)
        return []
    tk.move(ctx.store, doc, event, ctx.now_ms(), _patch(ctx, doc, rep), tolerate_illegal=True)
    return []


def on_book_fills(env: Envelope, ctx: Context, t: TimerFired) -> tk.Out:
    """The ``book_fills`` timer: the leg's trades from the venue into ``fills`` (see ``toolkit.book_fills_later``)."""
    intent, doc = tk.load_intent(ctx, t.ref), tk.load_leg(ctx, t.ref, t.data.get("part", ""))
    if intent is not None and doc is not None:
        tk.record_fills(ctx, tk.client(ctx, intent), intent, doc, retry=True)
    return []


def _patch(ctx: Context, doc: OrderLeg, rep: VenueReport) -> dict:
    """Cumulative quantities never go backwards (reports for one order can arrive out of order)."""
    patch: dict = {"venue_order_id": doc.venue_order_id or rep.venue_order_id}
    filled = max(doc.filled_qty, rep.cum_qty)
    if filled:
        patch["filled_qty"] = filled
        avg = _average(ctx, doc, filled)
        if avg is None and rep.last_qty == filled:
            avg = rep.last_price
        if avg is not None:
            patch["avg_price"] = avg
    return patch


def _average(ctx: Context, doc: OrderLeg, filled: Decimal) -> Decimal | None:
    """Average price from the booked fills, when they account for the whole filled quantity."""
    fills = tk.fills_of(ctx, {"client_order_id": doc.client_order_id})
    qty = sum((f.qty for f in fills), Decimal(0))
    if not qty or qty != filled:
        return doc.avg_price
    return sum((f.qty * f.price for f in fills), Decimal(0)) / qty
