"""``CancelOrder``: cancel an intent's live legs, stop its pending work, optionally escalate to market.

Whole-intent cancel (no ``client_order_id``): every live leg is cancelled (a fill that beats the cancel
wins), maker/TWAP timers and queued slices are dropped, an armed SPOT guard is disarmed, and an intent
still in flight ends ``CANCELED`` with what it filled. ``escalate_to_market`` then deals with what the
intent leaves behind, as one child intent with a derived id (``<intent_id>:escalate``), so any number
of redeliveries or repeated commands give one order at the venue (S4 de-duplicates by intent id):

* an entry/add that filled something -> reduce-only MARKET close of the net filled quantity
  (SPOT: what is held after fees, minus what its TP/SL legs already sold);
* a reducing intent (exit, stop, take-profit...) -> reduce-only MARKET for what it did not fill.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from loguru import logger

from chimera.errors import PermanentError
from chimera.handlers.router import core, legs, spot
from chimera.handlers.router.legs import dec
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import CancelOrder, OrderIntent, SubmitOrder
from chimera.schemas.states import ORDER_FSM
from chimera.schemas.states import OrderStatus as S
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers import scheduler
from chimera.workers.handler import Context


def cancel_intent(env: Envelope, ctx: Context, c: CancelOrder) -> list[Emit]:
    intent = ctx.store.get(core.INTENTS, c.intent_id)
    if intent is None:
        raise PermanentError(f"cancel for unknown intent {c.intent_id}")
    client = core.venue(ctx).for_market(intent["market"])
    out: list[Emit] = []
    for doc in ctx.store.query(legs.ORDERS, {"intent_id": c.intent_id}):
        if c.client_order_id and doc["client_order_id"] != c.client_order_id:
            continue
        if ORDER_FSM.is_terminal(S(doc["status"])) or doc["status"] == S.INITIALIZED.value:
            continue
        doc = legs.cancel(ctx.store, client, doc, ctx.now_ms())
        core.record_fills(ctx, client, intent, doc)
        core.strategy_event(ctx, "CANCEL", f"{c.intent_id}:{doc['leg']}", {
            "intent_id": c.intent_id, "client_order_id": doc["client_order_id"], "reason": c.reason,
            "final_status": doc["status"]})
        out.append(core.emit_result(core.result_for(
            intent, doc["leg"], doc["status"], filled=dec(doc["filled_qty"]) or Decimal(0),
            avg=dec(doc.get("avg_price")), doc=doc, reason=c.reason or "cancel")))
    if not c.client_order_id:
        _stop_pending_work(ctx, intent)
        if intent["phase"] != "DONE":
            filled, avg = core.aggregate(_entry_legs(ctx, intent))
            out += core.finish(ctx, intent, core.result_for(intent, "*", S.CANCELED.value, filled=filled, avg=avg,
                                                            reason=c.reason or "cancel"))
    if c.escalate_to_market:
        out += escalate(ctx, ctx.store.get(core.INTENTS, c.intent_id), c.reason)
    return out


def _stop_pending_work(ctx: Context, intent: dict) -> None:
    iid = intent["intent_id"]
    scheduler.cancel(ctx.redis, f"router:maker_check:{iid}:")
    for s in intent.get("twap_plan") or []:
        scheduler.cancel(ctx.redis, f"router:twap_slice:{iid}:{s['i']}")
        ctx.redis.zrem(keys.TWAP_QUEUE, f"{iid}:{s['i']}")
    if intent["market"] == "SPOT":
        spot.stop_watch(ctx, iid)
        spot.disarm(ctx, intent)


def _entry_legs(ctx: Context, intent: dict) -> list[dict]:
    """The legs trading in the intent's direction (SPOT protection legs sell what the entry bought)."""
    return [d for d in ctx.store.query(legs.ORDERS, {"intent_id": intent["intent_id"]}) if d["side"] == intent["side"]]


def escalate(ctx: Context, intent: dict, reason: str = "") -> list[Emit]:
    iid = intent["intent_id"]
    f = core.venue(ctx).for_market(intent["market"]).filters(intent["symbol"])
    entry_filled = core.aggregate(_entry_legs(ctx, intent))[0]
    if core.is_reducing(intent):
        side, qty = intent["side"], f.qty(Decimal(intent["qty"]) - entry_filled)
    else:
        side, qty = ("SELL" if intent["side"] == "BUY" else "BUY"), f.qty(_left_open(ctx, intent, entry_filled))
    if qty <= 0 or qty < f.min_qty:
        logger.info("escalate {}: nothing left to trade at market ({})", iid, qty)
        return []
    child = OrderIntent(intent_id=f"{iid}:escalate", market=intent["market"], symbol=intent["symbol"], side=side,
                        qty=qty, exec_policy="MARKET", purpose="EXIT", reduce_only=True,
                        pos_id=intent.get("pos_id") or iid, parent_intent_id=iid)
    core.strategy_event(ctx, "ESCALATE", iid, {"intent_id": iid, "child_intent_id": child.intent_id, "side": side,
                                                "qty": str(qty), "reason": reason})
    return [Emit(keys.ORD_COMMANDS, SubmitOrder(intent=child), child.intent_id)]


def _left_open(ctx: Context, intent: dict, entry_filled: Decimal) -> Decimal:
    if intent["market"] != "SPOT":
        return entry_filled
    raw = ctx.redis.get(keys.guard_stop(intent["symbol"], intent["intent_id"]))
    if raw is not None and msgspec.json.decode(raw).get("state") == "FIRED":
        return Decimal(0)  # the guard's own exit is selling the position
    held = dec(intent.get("held_qty")) or entry_filled
    sold = sum((dec(d.get("filled_qty")) or Decimal(0) for d in ctx.store.query(legs.ORDERS, {"intent_id": intent["intent_id"]})
                if d["side"] != intent["side"]), Decimal(0))
    return held - sold
