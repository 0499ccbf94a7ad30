"""One-leg policies: MARKET (leg ``mkt``), LIMIT GTC (leg ``lmt``), and futures STOP / TAKE_PROFIT algo orders
(leg ``sl`` / ``tp``: STOP_MARKET / TAKE_PROFIT_MARKET, reduce-only, MARK_PRICE)."""

from __future__ import annotations

import msgspec

from chimera.errors import NotYetImplemented, PermanentError
from chimera.handlers.router import toolkit as tk
from chimera.schemas.documents.orders import IntentDoc
from chimera.schemas.envelope import Envelope
from chimera.workers.handler import Context

S = tk.S


def run_market(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    return _single(env, ctx, intent, "mkt", "MARKET")


def run_limit(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    return _single(env, ctx, intent, "lmt", "LIMIT", tif="GTC")


def _single(env: Envelope, ctx: Context, intent: IntentDoc, leg: str, order_type: str, tif: str | None = None) -> tk.Out:
    client = tk.client(ctx, intent)
    f = client.filters(intent.symbol)
    price = None
    if order_type == "LIMIT":
        if intent.price is None:
            raise PermanentError(f"intent {intent.intent_id}: a LIMIT needs price")
        price = f.price(intent.price)
    if intent.phase == "NEW":
        intent = tk.set_phase(ctx, intent, "WORKING")
    intent, doc = tk.open_leg(ctx, intent, leg, order_type, f.qty(intent.qty), price=price, tif=tif)
    doc = tk.place_leg(env, ctx, client, intent, doc)
    if tk.is_terminal(doc) or order_type == "LIMIT":
        return [*tk.finish(ctx, intent, tk.leg_result(intent, doc, reason=doc.reason)), *tk.book_fills_later(ctx, doc)]
    return [tk.emit_result(tk.leg_result(intent, doc)), *tk.book_fills_later(ctx, doc)]


def run_stop(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    if intent.market != "FUT":
        raise NotYetImplemented("a standalone SPOT stop goes through exec_policy=OCO/GUARD")
    client = tk.client(ctx, intent)
    f = client.filters(intent.symbol)
    tp = intent.purpose == "TAKE_PROFIT"
    trigger = intent.tp_price if tp else (intent.stop_price or intent.sl_price)
    if trigger is None:
        raise PermanentError(f"intent {intent.intent_id}: a STOP needs stop_price/sl_price (or tp_price)")
    leg = "tp" if tp else "sl"
    if intent.phase == "NEW":
        intent = tk.set_phase(ctx, intent, "WORKING")
    intent, doc = tk.open_leg(ctx, intent, leg, "TAKE_PROFIT_MARKET" if tp else "STOP_MARKET", f.qty(intent.qty),
                              stop_price=f.price(trigger), algo=True, with_book=False)
    doc = msgspec.structs.replace(doc, reduce_only=True)
    doc = tk.place_leg(env, ctx, client, intent, doc)
    if doc.status in (S.ACCEPTED.value, S.TRIGGERED.value, S.FILLED.value):
        tk.strategy_event(ctx, "TP_SL_PLACED", intent.intent_id, {
            "intent_id": intent.intent_id, "pos_id": intent.pos_id, "symbol": intent.symbol, "leg": leg,
            "client_order_id": doc.client_order_id, "trigger": str(doc.stop_price), "working_type": "MARK_PRICE"})
    return tk.finish(ctx, intent, tk.result_for(intent, leg, doc.status, doc=doc, reason=doc.reason))
