"""A new position's protection, from what actually filled (issue 12, protection in fast markets).

* **Prices.** The decision measured its stop and take-profit from its own reference price (S3's
  ``signals/<id>.decision.price``; for an intent without a decision, the mid S4 saw when it sent the
  entry, ``arrival_mid``). The fill can be far from it in a fast market, so the position keeps the
  *distances*: stop = average fill + (``sl_price`` − reference), take-profit likewise, rounded to the
  tick away from the market. Without a reference the intent's prices are used as they are; without a
  ``sl_price`` the stop is ``positions.default_sl_pct`` (× the regime/health stop multiplier) away.
* **Checked against the mark.** The venue checks a MARK_PRICE stop against its mark when it is placed and
  refuses one that would trigger at once (-2021): with no stop armed the position is then closed at market
  at once (``stops.py``: ``<pos_id>:exit-sl<n>``, purpose EXIT, ERROR alert ``STOP_WOULD_TRIGGER``). That is
  the check made at the venue's own instant; reading the mark first would cost every entry one more round
  trip before its stop (B1: the stop at the venue within 100 ms of the fill). A management pass that finds
  no stop armed and its mark through the stop exits the same way (``manage.py``).
* **Futures take-profit.** With a take-profit price and no ``positions.tp_ladder`` (the ladder is S6's
  own way of taking profit), a TAKE_PROFIT_MARKET (reduce-only, MARK_PRICE; S4's STOP policy with purpose
  TAKE_PROFIT) for the entry's qty rests beside the stop: ``<pos_id>:tpo``. Whichever fills first
  closes the position, and the close cancels the other (``lifecycle.close_tail``). It is not resized
  after adds (reduce-only: it can never open the other side).
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.common import dec
from chimera.handlers.positions.common import PE, Out, filters, market_intent, moved, pairs, param, submit
from chimera.handlers.positions.multipliers import current as multipliers
from chimera.schemas.documents.positions import Position, TakeProfitOrder, replace
from chimera.schemas.messages import Alert, CancelOrder, OrderIntent, OrderResult
from chimera.store.collections import SIGNALS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import client_order_id
from chimera.workers.handler import Context

TP_SUFFIX = "tpo"
TP_LEG = "tp"  # S4's leg name for a TAKE_PROFIT order (the client order id derives from intent and leg)
ARMED = ("ACCEPTED", "TRIGGERED")
GONE = ("REJECTED", "CANCELED", "EXPIRED")


def reference_price(ctx: Context, intent: dict) -> Decimal | None:
    """The price the intent's ``sl_price`` / ``tp_price`` were measured from."""
    if intent.get("signal_id"):
        decision = ((ctx.store.get(SIGNALS, intent["signal_id"]) or {}).get("decision") or {})
        if decision.get("price"):
            return Decimal(str(decision["price"]))
    return dec(intent.get("arrival_mid"))


def prices(ctx: Context, pos: Position, intent: dict, entry: Decimal) -> tuple[Decimal, Decimal | None, Decimal | None]:
    """(stop, take-profit or None, reference or None) for a position entered at ``entry`` on average."""
    f = filters(ctx, pos.symbol)
    ref = reference_price(ctx, intent)
    sl, tp = dec(intent.get("sl_price")), dec(intent.get("tp_price"))
    if sl is not None and ref:
        sl = entry + (sl - ref)
    if sl is None:
        pct = param(ctx, "default_sl_pct", Decimal("0.01")) * multipliers(ctx).stop
        sl = entry * (1 - pos.direction * pct)
    if tp is not None and ref:
        tp = entry + (tp - ref)
    if tp is not None and tp <= 0:
        # A short's target at or below zero (a wide ATR multiple on a volatile day) cannot be reached and
        # the venue refuses the order (-4001): the position has no take-profit; the stop protects it.
        logger.info("position {}: take-profit {} is not a price; none is placed", pos.pos_id, tp)
        tp = None
    # Away from the market: a long's stop rounds down and its take-profit up (a short's the other way).
    return f.price(sl, pos.side, passive=True), None if tp is None else f.price(tp, pos.close_side, passive=True), ref


def would_trigger(pos: Position, stop: Decimal, mark: Decimal | None) -> bool:
    return mark is not None and pos.direction * (mark - stop) <= 0


def alert(pos: Position, code: str, message: str, tag: str) -> Emit:
    return Emit(keys.ALERTS, Alert(level="ERROR", code=code, message=message,
                                   context={"pos_id": pos.pos_id, "symbol": pos.symbol, "account_id": pos.account_id}),
                f"pos:{pos.pos_id}:alert:{code}:{tag}", account_id=pos.account_id)


def exit_now(pos: Position, suffix: str, why: str, code: str) -> tuple[Position, Out]:
    """Close at market at once (reduce-only MARKET, purpose EXIT) and say why on ``alerts``."""
    logger.error("position {}: {}; closing at market", pos.pos_id, why)
    if pos.state != "PENDING_CLOSING":
        pos = moved(pos, PE.CLOSE_REQUESTED)
    return pos, [submit(market_intent(pos, suffix, pos.qty, "EXIT", reduce=True)),
                 alert(pos, code, f"position {pos.pos_id} ({pos.qty} {pos.symbol}): {why}; closing at market", suffix)]


def first(ctx: Context, pos: Position, intent: dict) -> Position:
    """Right after the first fill: the stop/take-profit targets. The caller then places the stop
    (``stops.reconcile``) and the take-profit (``place_take_profit``)."""
    sl, tp, ref = prices(ctx, pos, intent, pos.entry_price)
    return replace(pos, sl_price=sl, tp_price=tp, reference_price=ref)


def place_take_profit(ctx: Context, pos: Position) -> tuple[Position, Out]:
    """Ask S4 for the resting take-profit once, when the position has a target and no ladder."""
    if pos.tp_price is None or pos.take_profit.intent_id or not pos.is_open or pos.market != "FUT" \
            or pairs(ctx, "tp_ladder"):
        return pos, []
    iid = f"{pos.pos_id}:{TP_SUFFIX}"
    tpo = TakeProfitOrder(intent_id=iid, client_order_id=client_order_id(iid, TP_LEG), price=pos.tp_price,
                          qty=pos.qty, status="PENDING")
    return replace(pos, take_profit=tpo), [submit(_intent(pos, tpo))]


def _intent(pos: Position, tpo: TakeProfitOrder) -> OrderIntent:
    return OrderIntent(intent_id=tpo.intent_id, market="FUT", symbol=pos.symbol, side=pos.close_side, qty=tpo.qty,
                       exec_policy="STOP", purpose="TAKE_PROFIT", tp_price=tpo.price, reduce_only=True,
                       pos_id=pos.pos_id, parent_intent_id=pos.entry_intent_id, account_id=pos.account_id)


def is_order(pos: Position, intent_id: str) -> bool:
    return bool(pos.take_profit.intent_id) and intent_id == pos.take_profit.intent_id


def on_result(pos: Position, res: OrderResult) -> tuple[Position, Out]:
    """S4's answer for the resting take-profit (its fill is booked like any reduce-only fill)."""
    tpo = pos.take_profit
    if res.status in ARMED and tpo.status == "PENDING":
        return replace(pos, take_profit=replace(tpo, status="ARMED")), []
    if res.status in GONE and tpo.status in ("PENDING", "ARMED") and pos.is_open:
        logger.warning("position {}: take-profit {} is {} ({}); the stop protects it", pos.pos_id, tpo.intent_id,
                       res.status, res.reason)
        return replace(pos, take_profit=replace(tpo, status="REFUSED" if res.status == "REJECTED" else res.status,
                                                reason=res.reason)), []
    return pos, []


def cancel_take_profit(pos: Position, why: str) -> list[Emit]:
    tpo = pos.take_profit
    if not tpo.intent_id or tpo.status == "REFUSED" or pos.exit_intent_id == tpo.intent_id:
        return []
    return [Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=tpo.intent_id, symbol=pos.symbol, reason=why),
                 f"cancel:{tpo.intent_id}")]
