"""The exchange-side stop follows the position: new stop first, old one cancelled once the new is ACCEPTED.

``Position.stop`` holds the armed stop (level, intent, client order id, price, qty), the one in flight
(``pending``), the replaced ones whose cancel is not confirmed (``retired``) and the last refusal.
When the position's target (``sl_price``, ``qty``) differs from the armed stop, the next level
``<pos_id>:sl<n+1>`` (reduce-only STOP_MARKET on the mark price, via S4) becomes ``pending``; only S4's
ACCEPTED for it retires the previous one and cancels it, so the old stop rests until the new one is at
the venue. At most one stop is in flight: while ``pending`` is set nothing new is placed, the pending
command is only sent again (same intent id: S4 answers a duplicate with its stored result), so a
redelivered tick or result cannot create a second stop. A refused stop leaves the armed one in place;
the same refused stop is tried again after ``positions.sl_retry_ms``. With no stop armed and the venue
saying it would trigger at once (-2021), the position is closed at market (``<pos_id>:exit-sl<n>``).
"""

from __future__ import annotations

from loguru import logger

from chimera.handlers.positions import protection
from chimera.handlers.positions.common import (
    Out,
    event,
    param,
    submit,
)
from chimera.schemas.documents.positions import Position, Stop, StopRefusal, StopStep, replace
from chimera.schemas.messages import Alert, CancelOrder, OrderIntent, OrderResult
from chimera.schemas.states import PositionStatus as P
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import client_order_id
from chimera.workers.handler import Context

ARMED = ("ACCEPTED", "TRIGGERED")
GONE = ("REJECTED", "CANCELED", "EXPIRED")
WOULD_TRIGGER = "-2021"  # the venue's "Order would immediately trigger": price is already through it
LEG = "sl"  # S4's leg name for a STOP order (the client order id derives from intent and leg)


def cancel(pos: Position, intent_id: str, why: str) -> Emit:
    return Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=intent_id, symbol=pos.symbol, reason=why),
                f"cancel:{intent_id}")


def _intent(pos: Position, step: StopStep) -> OrderIntent:
    return OrderIntent(intent_id=step.intent_id, market="FUT", symbol=pos.symbol, side=pos.close_side, qty=step.qty,
                       exec_policy="STOP", purpose="STOP", stop_price=step.price, reduce_only=True, pos_id=pos.pos_id,
                       parent_intent_id=pos.entry_intent_id, account_id=pos.account_id,
                       bundle_id=pos.bundle_id, config_rev=pos.config_rev)  # the entry's bundle protects it


def _with(pos: Position, **stop) -> Position:
    return replace(pos, stop=replace(pos.stop, **stop))


def reconcile(ctx: Context, pos: Position) -> tuple[Position, Out]:
    """Place the stop the position needs now, or send the one in flight again."""
    st = pos.stop
    if not pos.is_open or pos.market != "FUT":
        return pos, []
    if st.pending is not None:
        return pos, [submit(_intent(pos, st.pending))]
    price, qty = pos.sl_price, pos.qty
    if price is None or qty <= 0:
        return pos, []
    if st.intent_id and (st.price, st.qty) == (price, qty):
        return pos, []
    refused = st.refused
    # With a stop armed, a refused replacement waits ``sl_retry_ms``; with none, every pass tries again.
    if refused is not None and st.intent_id and (refused.price, refused.qty) == (price, qty) and \
            ctx.now_ms() - refused.at < param(ctx, "sl_retry_ms", 30_000):
        return pos, []
    n = max(st.n, st.level) + 1
    step = StopStep(n=n, intent_id=f"{pos.pos_id}:sl{n}", price=price, qty=qty, at=ctx.now_ms())
    return _with(pos, pending=step, n=n), [submit(_intent(pos, step))]


def on_result(ctx: Context, pos: Position, res: OrderResult) -> tuple[Position, Out]:
    """S4's answer for one of this position's stops (placement, or cancel of a replaced one)."""
    st, iid = pos.stop, res.intent_id
    if st.pending is not None and iid == st.pending.intent_id:
        if res.status in ARMED:
            return _promote(ctx, pos, st.pending)
        if res.status in GONE:
            return _refused(ctx, pos, st.pending, res)
        return pos, []
    if iid == st.intent_id:
        if res.status in ARMED:  # a repeated answer: finish what the first delivery started
            return pos, [cancel(pos, old, f"replaced by {iid}") for old in st.retired] + \
                [event(pos, "SL_ARMED", sl_price=st.price, tag=iid)]
        if res.status in GONE:  # the armed stop is no longer at the venue (cancelled outside S6)
            logger.warning("position {}: armed stop {} is {} ({}); placing a new one", pos.pos_id, iid,
                           res.status, res.reason)
            return reconcile(ctx, _with(pos, level=0, intent_id="", client_order_id="", price=None, qty=None))
        return pos, []
    if iid in st.retired:
        if res.status in ARMED:
            return pos, [cancel(pos, iid, "replaced")]
        return _with(pos, retired=tuple(i for i in st.retired if i != iid)), []
    return pos, []


def _promote(ctx: Context, pos: Position, new: StopStep) -> tuple[Position, Out]:
    old = pos.stop.intent_id
    stop = Stop(level=new.n, intent_id=new.intent_id, client_order_id=client_order_id(new.intent_id, LEG),
                price=new.price, qty=new.qty, n=max(pos.stop.n, new.n),
                retired=(*pos.stop.retired, old) if old else pos.stop.retired)
    pos = replace(pos, stop=stop)
    out: Out = [event(pos, "SL_ARMED", sl_price=new.price, tag=new.intent_id)]
    if old:
        out += [event(pos, "TRAIL_MOVED", sl_price=new.price, tag=new.intent_id),
                cancel(pos, old, f"replaced by {new.intent_id}")]
    pos, more = reconcile(ctx, pos)  # the position may have changed while the stop was in flight
    return pos, out + more


def _refused(ctx: Context, pos: Position, step: StopStep, res: OrderResult) -> tuple[Position, Out]:
    pos = _with(pos, pending=None, refused=StopRefusal(price=step.price, qty=step.qty, at=ctx.now_ms(),
                                                       reason=res.reason))
    if pos.stop.intent_id:
        logger.warning("position {}: new stop {} refused ({}); the armed {} stays", pos.pos_id, step.intent_id,
                       res.reason, pos.stop.intent_id)
        return pos, []
    if WOULD_TRIGGER in res.reason and pos.state == P.ACTIVE:
        # No stop armed and the price is already through it: get out now rather than stay unprotected.
        return protection.exit_now(pos, f"exit-sl{step.n}", f"stop {step.price} would trigger at once at the "
                                   f"venue ({res.reason})", "STOP_WOULD_TRIGGER")
    logger.error("position {}: stop {} refused ({}) and none armed; trying again on the next pass",
                 pos.pos_id, step.intent_id, res.reason)
    return pos, [Emit(keys.ALERTS, Alert(level="ERROR", code="STOP_REFUSED_UNPROTECTED", context={
        "pos_id": pos.pos_id, "symbol": pos.symbol, "intent_id": step.intent_id},
        message=f"position {pos.pos_id}: stop {step.intent_id} refused ({res.reason}) and none armed"),
        f"pos:{pos.pos_id}:alert:STOP_REFUSED_UNPROTECTED:{step.intent_id}", account_id=pos.account_id)]
