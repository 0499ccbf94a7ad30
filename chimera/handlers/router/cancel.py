"""``CancelOrder``: cancel an intent's live legs, stop its pending work, optionally escalate to market.

Whole-intent cancel (no ``client_order_id``): every live leg is cancelled (a fill that beats the cancel
wins), its maker/TWAP/guard timers are disarmed (``CancelTimer``), an armed SPOT guard is disarmed, and an
intent still in flight ends ``CANCELED`` with what it filled. ``escalate_to_market`` then deals with what
the intent leaves behind, as one child intent with a derived id (``<intent_id>:escalate``), so any number
of redeliveries or repeated commands give one order at the venue (S4 de-duplicates by intent id):

* an entry/add that filled something -> reduce-only MARKET close of the net filled quantity
  (SPOT: what is held after fees, minus what its TP/SL legs already sold);
* a reducing intent (exit, stop, take-profit...) -> reduce-only MARKET for what it did not fill.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.errors import PermanentError
from chimera.handlers.common import account_of
from chimera.handlers.router import toolkit as tk
from chimera.schemas.documents.orders import IntentDoc, OrderLeg
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import CancelOrder, OrderIntent, SubmitOrder
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

S = tk.S


def on_cancel(env: Envelope, ctx: Context) -> tk.Out:
    c: CancelOrder = env.payload
    intent = tk.load_intent(ctx, c.intent_id)
    if intent is None:
        raise PermanentError(f"cancel for unknown intent {c.intent_id}")
    # The intent's own account holds its orders: a cancel tagged for another account is refused.
    account_of(env, intent.account_id)
    client = tk.client(ctx, intent)
    out: tk.Out = []
    for doc in tk.legs_of(ctx, c.intent_id):
        if c.client_order_id and doc.client_order_id != c.client_order_id:
            continue
        if tk.is_terminal(doc) or doc.status == S.INITIALIZED.value:
            continue
        doc = tk.cancel(ctx, client, doc)
        out += tk.book_fills_later(ctx, doc)
        tk.strategy_event(ctx, "CANCEL", f"{c.intent_id}:{doc.leg}", {
            "intent_id": c.intent_id, "client_order_id": doc.client_order_id, "reason": c.reason,
            "final_status": doc.status})
        out.append(tk.emit_result(tk.leg_result(intent, doc, reason=c.reason or "cancel")))
    if not c.client_order_id:
        out += _stop_pending_work(ctx, intent)
        if intent.phase != "DONE":
            filled, avg = tk.aggregate(_entry_legs(ctx, intent))
            out += tk.finish(ctx, intent, tk.result_for(intent, "*", S.CANCELED.value, filled=filled, avg=avg,
                                                        reason=c.reason or "cancel"))
    if c.escalate_to_market:
        out += escalate(ctx, tk.load_intent(ctx, c.intent_id), c.reason)
    return out


def _stop_pending_work(ctx: Context, intent: IntentDoc) -> tk.Out:
    iid = intent.intent_id
    out: tk.Out = [tk.cancel_timer(name, iid) for name in (tk.MAKER_CHECK, tk.GUARD_CHECK)]
    out += [tk.cancel_timer(tk.TWAP_SLICE, iid, str(s.i)) for s in intent.twap_plan]
    if intent.market == "SPOT":
        tk.disarm_guard(ctx, iid)
    return out


def _entry_legs(ctx: Context, intent: IntentDoc) -> list[OrderLeg]:
    """The legs trading in the intent's direction (SPOT protection legs sell what the entry bought)."""
    return [d for d in tk.legs_of(ctx, intent.intent_id) if d.side == intent.side]


def escalate(ctx: Context, intent: IntentDoc, reason: str = "") -> tk.Out:
    iid = intent.intent_id
    f = tk.client(ctx, intent).filters(intent.symbol)
    entry_filled = tk.aggregate(_entry_legs(ctx, intent))[0]
    if intent.reducing:
        side, qty = intent.side, f.qty(intent.qty - entry_filled)
    else:
        side, qty = ("SELL" if intent.side == "BUY" else "BUY"), f.qty(_left_open(ctx, intent, entry_filled))
    if qty <= 0 or qty < f.min_qty:
        logger.info("escalate {}: nothing left to trade at market ({})", iid, qty)
        return []
    child = OrderIntent(intent_id=f"{iid}:escalate", market=intent.market, symbol=intent.symbol, side=side,
                        qty=qty, exec_policy="MARKET", purpose="EXIT", reduce_only=True,
                        pos_id=intent.pos_id or iid, parent_intent_id=iid, account_id=intent.account_id)
    tk.strategy_event(ctx, "ESCALATE", iid, {"intent_id": iid, "child_intent_id": child.intent_id, "side": side,
                                              "qty": str(qty), "reason": reason})
    return [Emit(keys.ORD_COMMANDS, SubmitOrder(intent=child), child.intent_id, intent.account_id)]


def _left_open(ctx: Context, intent: IntentDoc, entry_filled: Decimal) -> Decimal:
    if intent.market != "SPOT":
        return entry_filled
    guard = tk.load_guard(ctx, intent.intent_id)
    if guard is not None and guard.state == "FIRED":
        return Decimal(0)  # the guard's own exit is selling the position
    held = intent.held_qty or entry_filled
    sold = sum((d.filled_qty for d in tk.legs_of(ctx, intent.intent_id) if d.side != intent.side), Decimal(0))
    return held - sold
