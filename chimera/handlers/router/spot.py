"""SPOT entries with protection (B2): native OCO first, separate TP and SL orders second, a guard stop last.

* ``OCO`` (with ``tp_price``): MARKET entry (leg ``e``), then one ``/api/v3/orderList/oco`` whose legs are
  ``orders`` documents ``otp`` (LIMIT_MAKER above) and ``osl`` (STOP_LOSS_LIMIT below), driven like any leg:
  INITIALIZED -> SUBMITTED before the request, UNKNOWN on a lost reply, resolved by querying the leg's
  client id (the list is atomic: one leg found means both exist).
* OCO refused: a STOP_LOSS_LIMIT (leg ``sl``) and a LIMIT_MAKER take-profit (leg ``tp``), placed separately.
  Spot locks the sold base asset per order, so both only fit when the account holds more than the entry
  bought; a refused TP is reported in the result's reason (the stop comes first: it is the protection).
  Nothing links the two at the venue, so the watch (below) cancels one when the other executes.
* The stop refused too (conditional orders unsupported), or ``exec_policy=GUARD``: the take-profit still goes
  to the venue as a plain LIMIT_MAKER and the stop is a local guard, ``guard_stops/<intent_id>``
  (``GuardStop``, inserted once: a redelivery never re-arms a fired guard).
* A SELL intent with purpose STOP/TAKE_PROFIT protects what is already held (S6, for a spot position whose
  entry came without protection): no entry leg, the same three steps for ``qty``.

The watch is the ``guard_check`` timer (``router.guard_poll_ms``, default 500), returned to the runtime
and re-armed by each look, so it survives restarts. When the venue's top-of-book mid (bookTicker) reaches
the stop, one compare-and-set on the guard document moves it ARMED -> FIRED, the take-profit is cancelled
first (it holds the base asset; a fill that beats the cancel shrinks the exit), and a MARKET exit with the
derived intent id ``<intent_id>:guard`` is emitted. A redelivery that finds FIRED but no exit intent yet
emits it again; S4 de-duplicates by intent id, so however many monitors race or die, one exit order
reaches the venue.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.router import toolkit as tk
from chimera.schemas.documents.orders import GuardStop, IntentDoc, OrderLeg, to_doc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import OrderIntent, SubmitOrder, TimerFired
from chimera.schemas.states import OrderEvent
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import (
    AlreadyAccepted,
    OrderNotFound,
    VenueRateLimited,
    VenueRejected,
    VenueUnknown,
    client_order_id,
)
from chimera.workers.handler import Context

S = tk.S
WATCH = tk.GUARD_CHECK
PROTECT_PURPOSES = ("STOP", "TAKE_PROFIT")


def run(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    holding = intent.side == "SELL" and intent.purpose in PROTECT_PURPOSES
    if intent.side != "BUY" and not holding:
        raise PermanentError("SPOT OCO/GUARD entries are long-only (spot cannot short); a SELL only protects a "
                             f"holding (purpose {'/'.join(PROTECT_PURPOSES)})")
    if intent.sl_price is None:
        raise PermanentError(f"intent {intent.intent_id}: OCO/GUARD needs sl_price")
    client = tk.client(ctx, intent)
    f = client.filters(intent.symbol)
    if intent.phase == "NEW" and holding:
        # Protection for what a position already holds (S6 asks for it after an unprotected entry): no entry leg.
        intent = tk.set_phase(ctx, intent, "PROTECT", held_qty=f.qty(intent.qty))
    if intent.phase == "NEW":
        intent = tk.set_phase(ctx, intent, "ENTRY")
    out: tk.Out = []
    if intent.phase == "ENTRY":
        intent, doc = tk.open_leg(ctx, intent, "e", "MARKET", f.qty(intent.qty))
        doc = tk.place(ctx, client, doc)
        tk.record_fills(ctx, client, intent, doc)
        if doc.status != S.FILLED.value:
            return tk.finish(ctx, intent, tk.result_for(intent, "e", doc.status, doc=doc, reason=doc.reason))
        # Spot fees come out of the received base asset: protect what we actually hold.
        fee = sum((x.fee for x in tk.fills_of(ctx, {"intent_id": intent.intent_id}) if x.fee_asset != "USDT"),
                  Decimal(0))
        intent = tk.set_phase(ctx, intent, "PROTECT", held_qty=f.qty(doc.filled_qty - fee))
        out.append(tk.emit_result(tk.result_for(intent, "e", S.FILLED.value, filled=doc.filled_qty,
                                                avg=doc.avg_price, doc=doc)))
    if intent.phase != "PROTECT":
        return out
    return out + _protect(ctx, intent, client, f)


def rearm(ctx: Context, intent: IntentDoc) -> tk.Out:
    """A repeated command for a finished protected entry: the watch again (it replaces, never doubles), in case
    the delivery that armed it died before the runtime wrote it."""
    guard = tk.load_guard(ctx, intent.intent_id)
    venue_legs = [d for leg in ("tp", "sl") if (d := tk.load_leg(ctx, intent.intent_id, leg))]
    if (guard is not None and guard.state == "ARMED") or any(d.status in tk.LIVE for d in venue_legs):
        return [_watch(ctx, intent.intent_id, intent.symbol)]
    return []


def _protect(ctx: Context, intent: IntentDoc, client, f) -> tk.Out:
    iid, held = intent.intent_id, intent.held_qty
    sl = f.price(intent.sl_price)
    sl_limit = f.price(sl * (1 - Decimal(tk.param(ctx, "spot_stop_limit_bps", 50)) / 10_000))
    tp = f.price(intent.tp_price) if intent.tp_price is not None else None
    if intent.exec_policy == "OCO" and tp is not None:
        tp_doc, sl_doc = place_oco(ctx, client, intent, held, tp, sl, sl_limit)
        if sl_doc.status != S.REJECTED.value:  # the list is atomic: refused means neither leg exists
            tk.strategy_event(ctx, "TP_SL_PLACED", iid, {"intent_id": iid, "symbol": intent.symbol, "kind": "OCO",
                                                        "tp": str(tp), "sl": str(sl),
                                                        "client_order_ids": [tp_doc.client_order_id,
                                                                             sl_doc.client_order_id]})
            return tk.finish(ctx, intent, tk.result_for(intent, "oco", S.ACCEPTED.value, filled=held, doc=sl_doc,
                                                        reason="oco"))
        logger.warning("OCO for {} refused ({}); placing TP and SL separately", iid, sl_doc.reason)
    notes: list[str] = []
    stop = None
    if intent.exec_policy == "OCO":
        stop = _venue_leg(ctx, client, intent, "sl", "STOP_LOSS_LIMIT", held, price=sl_limit, stop_price=sl,
                          tif="GTC", purpose="STOP")
        if stop.status not in tk.PLACED:
            notes.append(f"sl refused ({stop.reason})")
            stop = None
    tp_placed = False
    if tp is not None:
        tp_doc = _venue_leg(ctx, client, intent, "tp", "LIMIT_MAKER", held, price=tp, purpose="TAKE_PROFIT")
        tp_placed = tp_doc.status in tk.PLACED
        if not tp_placed:
            notes.append(f"tp refused ({tp_doc.reason})")
    if stop is None:
        _arm(ctx, intent, held, sl)
    kind = "STOP" if stop is not None else "GUARD"
    tk.strategy_event(ctx, "TP_SL_PLACED", iid, {"intent_id": iid, "symbol": intent.symbol, "kind": kind,
                                                "tp": None if tp is None else str(tp), "sl": str(sl), "notes": notes})
    leg, reason = ("sl", "separate_tp_sl") if stop is not None else ("guard", "guard_stop")
    out = tk.finish(ctx, intent, tk.result_for(intent, leg, S.ACCEPTED.value, filled=held, doc=stop,
                                               reason="; ".join([reason, *notes])))
    if stop is None or tp_placed:  # something to link locally
        out.append(_watch(ctx, iid, intent.symbol))
    return out


def _venue_leg(ctx: Context, client, intent: IntentDoc, leg: str, order_type: str, qty: Decimal, **kw) -> OrderLeg:
    doc = tk.ensure_leg(ctx.store, tk.new_leg(intent, leg, order_type=order_type, side="SELL", qty=qty,
                                              now_ms=ctx.now_ms(), **kw))
    return tk.place(ctx, client, doc)


# --- native OCO --------------------------------------------------------------------------------------


def place_oco(ctx: Context, client, intent: IntentDoc, qty: Decimal, tp: Decimal, sl: Decimal,
              sl_limit: Decimal) -> tuple[OrderLeg, OrderLeg]:
    """Both OCO legs as ``orders`` documents, with the same exactly-once recipe as a single leg."""
    now = ctx.now_ms()
    tp_doc = tk.ensure_leg(ctx.store, tk.new_leg(intent, "otp", order_type="LIMIT_MAKER", side="SELL", qty=qty,
                                                 now_ms=now, price=tp, purpose="TAKE_PROFIT"))
    sl_doc = tk.ensure_leg(ctx.store, tk.new_leg(intent, "osl", order_type="STOP_LOSS_LIMIT", side="SELL", qty=qty,
                                                 now_ms=now, price=sl_limit, stop_price=sl, tif="GTC", purpose="STOP"))
    docs = [tp_doc, sl_doc]
    status = S(sl_doc.status)  # the stop leg moves last: SUBMITTED there means both are
    if status == S.INITIALIZED:
        docs = [tk.move(ctx.store, d, OrderEvent.ORDER_SUBMITTED, now) if d.status == S.INITIALIZED.value else d
                for d in docs]
        if tk.hooks(ctx).get("after_submitted"):
            tk.hooks(ctx)["after_submitted"](docs[1])
        docs = _send_oco(ctx, client, intent, docs)
    elif status in (S.SUBMITTED, S.UNKNOWN):
        # A previous attempt died mid-request (SUBMITTED) or lost the answer (UNKNOWN): ask, never assume.
        docs = _resolve_oco(ctx, client, intent, docs)
    return docs[0], docs[1]


def _send_oco(ctx: Context, client, intent: IntentDoc, docs: list[OrderLeg]) -> list[OrderLeg]:
    tp_doc, sl_doc = docs
    now = ctx.now_ms()
    try:
        answers = client.oco(symbol=intent.symbol, side="SELL", qty=sl_doc.qty, tp_price=tp_doc.price,
                             sl_stop=sl_doc.stop_price, sl_limit=sl_doc.price,
                             list_client_id=client_order_id(intent.intent_id, "oco"),
                             tp_client_id=tp_doc.client_order_id, sl_client_id=sl_doc.client_order_id)
    except AlreadyAccepted:
        return _resolve_oco(ctx, client, intent, docs)
    except (VenueUnknown, VenueRateLimited) as exc:
        docs = [tk.move(ctx.store, d, OrderEvent.ORDER_TIMED_OUT, now, {"reason": str(exc)[:200]})
                if d.status == S.SUBMITTED.value else d for d in docs]
        if isinstance(exc, VenueRateLimited):
            raise RetryableError(f"rate limited sending the OCO of {intent.intent_id}") from exc
        return _resolve_oco(ctx, client, intent, docs)
    except VenueRejected as exc:
        return [tk.move(ctx.store, d, OrderEvent.ORDER_REJECTED, now,
                        {"reason": f"{exc.code}: {exc.msg}", "reject_code": exc.code}) for d in docs]
    by_cid = {a.client_order_id: a for a in answers}
    return [tk.adopt(ctx.store, d, by_cid[d.client_order_id], now) if d.client_order_id in by_cid
            else tk.adopt(ctx.store, d, tk.query(client, d), now) for d in docs]


def _resolve_oco(ctx: Context, client, intent: IntentDoc, docs: list[OrderLeg]) -> list[OrderLeg]:
    now = ctx.now_ms()
    docs = [tk.move(ctx.store, d, OrderEvent.ORDER_TIMED_OUT, now, {"reason": "resumed after crash"})
            if d.status == S.SUBMITTED.value else d for d in docs]
    try:
        found = [tk.query(client, d) for d in docs]
    except OrderNotFound:
        logger.info("OCO of {} never reached the venue; sending it now", intent.intent_id)
        return _send_oco(ctx, client, intent, docs)
    return [tk.adopt(ctx.store, d, vo, now) for d, vo in zip(docs, found, strict=True)]


# --- guard stop and the watch ----------------------------------------------------------------------------


def _arm(ctx: Context, intent: IntentDoc, qty: Decimal, sl: Decimal) -> None:
    g = GuardStop(intent_id=intent.intent_id, symbol=intent.symbol, side="SELL", qty=qty, sl_price=sl,
                  armed_at=ctx.now_ms(), pos_id=intent.pos_id)
    ctx.store.insert_if_absent(tk.GUARDS, intent.intent_id, to_doc(g))  # a redelivery never re-arms a fired guard


def _watch(ctx: Context, intent_id: str, symbol: str):
    return tk.timer(WATCH, intent_id, ctx.now_ms() + tk.param(ctx, "guard_poll_ms", 500), symbol=symbol)


def guard_check(env: Envelope, ctx: Context, t: TimerFired) -> tk.Out:
    """One look at an intent's protection: venue TP/SL legs and the local guard stop."""
    intent = tk.load_intent(ctx, t.ref)
    if intent is None:
        return []
    client = tk.client(ctx, intent)
    venue_legs = {leg: d for leg in ("tp", "sl") if (d := tk.load_leg(ctx, t.ref, leg))}
    venue_legs = {leg: tk.refresh(ctx, client, d) if d.status in tk.LIVE else d for leg, d in venue_legs.items()}
    tp, sl = venue_legs.get("tp"), venue_legs.get("sl")
    guard = tk.load_guard(ctx, t.ref)
    # One side executed at the venue: the other must go (nothing links them there).
    if sl is not None and sl.status in tk.EXECUTED:
        tk.cancel_live(ctx, client, [tp])
        return []
    if tp is not None and tp.status == S.FILLED.value:
        tk.cancel_live(ctx, client, [sl])
        if guard is not None:
            tk.disarm_guard(ctx, t.ref)
        return []
    if guard is not None and guard.state == "FIRED":
        return _exit(ctx, client, intent, guard, tp)
    if guard is not None and guard.state == "ARMED":
        mid = client.top_of_book(intent.symbol).mid
        if mid is not None and mid <= guard.sl_price:
            return _fire(ctx, client, intent, guard, tp, mid)
    if (guard is not None and guard.state == "ARMED") or any(d.status in tk.LIVE for d in venue_legs.values()):
        return [_watch(ctx, t.ref, intent.symbol)]
    return []


def _fire(ctx: Context, client, intent: IntentDoc, guard: GuardStop, tp: OrderLeg | None, mid: Decimal) -> tk.Out:
    if not tk.guard_move(ctx, intent.intent_id, "ARMED", "FIRED", fired_at=ctx.now_ms(), fired_mid=mid):
        return []  # disarmed meanwhile; a racing monitor that fired it emits the exit itself
    tk.count(ctx, "guard_fired_count", intent.intent_id)
    if tk.hooks(ctx).get("after_guard_fired"):
        tk.hooks(ctx)["after_guard_fired"](guard)  # tests: crash between the fire and the exit
    return _exit(ctx, client, intent, guard, tp)


def _exit(ctx: Context, client, intent: IntentDoc, guard: GuardStop, tp: OrderLeg | None) -> tk.Out:
    exit_id = f"{intent.intent_id}:guard"
    if tk.load_intent(ctx, exit_id) is not None:
        return []  # the exit is already with S4
    # Cancel first: the take-profit holds the base asset, and a fill that beat the cancel shrinks the exit.
    sold = Decimal(0)
    if tp is not None:
        tp = tk.cancel_live(ctx, client, [tp])[0]
        sold = tp.filled_qty
    f = client.filters(intent.symbol)
    qty = f.qty(guard.qty - sold)
    if qty <= 0 or qty < f.min_qty:
        logger.info("guard of {} fired with nothing left to sell (take-profit filled {})", intent.intent_id, sold)
        return []
    exit_intent = OrderIntent(intent_id=exit_id, market="SPOT", symbol=intent.symbol, side=guard.side, qty=qty,
                              exec_policy="MARKET", purpose="STOP", reduce_only=True, pos_id=guard.pos_id,
                              parent_intent_id=intent.intent_id, account_id=intent.account_id)
    return [Emit(keys.ORD_COMMANDS, SubmitOrder(intent=exit_intent), exit_id, intent.account_id)]
