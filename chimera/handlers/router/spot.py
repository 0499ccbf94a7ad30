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
  to the venue as a plain LIMIT_MAKER and the stop is a local guard: ``guard:{stop}:<SYM>:<intent_id>``
  (JSON ``GuardArmed``, SET NX) + ``guard:{stop}:index:<SYM>``.

The watch is the ``guard_check`` timer (``router.guard_poll_ms``, default 500) on the scheduler, so it
survives restarts. When the venue's top-of-book mid (bookTicker) reaches the stop, one compare-and-set
script moves the guard ARMED -> FIRED, the take-profit is cancelled first (it holds the base asset; a fill
that beats the cancel shrinks the exit), and a MARKET exit with the derived intent id ``<intent_id>:guard``
is emitted. A redelivery that finds FIRED but no exit intent yet emits it again; S4 de-duplicates by intent
id, so however many monitors race or die, one exit order reaches the venue.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from loguru import logger

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.router import core, legs
from chimera.handlers.router.legs import dec, leg_key
from chimera.schemas.envelope import Envelope
from chimera.schemas.execution import GuardArmed
from chimera.schemas.messages import OrderIntent, SubmitOrder, TimerFired
from chimera.schemas.states import ORDER_FSM, OrderEvent
from chimera.schemas.states import OrderStatus as S
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
from chimera.workers import scheduler
from chimera.workers.handler import Context

# Compare-and-set on the guard's JSON state: ARGV[1] -> ARGV[2]; 1 if this call made the move.
_SWITCH = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local g = cjson.decode(raw)
if g['state'] ~= ARGV[1] then return 0 end
g['state'] = ARGV[2]
redis.call('SET', KEYS[1], cjson.encode(g))
return 1
"""
LIVE = (S.ACCEPTED.value, S.TRIGGERED.value, S.PARTIALLY_FILLED.value)
PLACED = (*LIVE, S.FILLED.value)
EXECUTED = (S.PARTIALLY_FILLED.value, S.FILLED.value)
OCO_LEGS = ("otp", "osl")
GUARDS = "guard_stops"


def run(env: Envelope, ctx: Context, intent: dict) -> list[Emit]:
    if intent["side"] != "BUY":
        raise PermanentError("SPOT OCO/GUARD entries are long-only (spot cannot short)")
    if intent.get("sl_price") is None:
        raise PermanentError(f"intent {intent['intent_id']}: OCO/GUARD needs sl_price")
    client = core.venue(ctx).spot
    f = client.filters(intent["symbol"])
    if intent["phase"] == "NEW":
        intent = core.set_phase(ctx, intent, "ENTRY")
    out: list[Emit] = []
    if intent["phase"] == "ENTRY":
        doc = core._new_leg(ctx, intent, "e", "MARKET", f.qty(Decimal(intent["qty"])))
        doc = legs.place(ctx.store, client, doc, ctx.now_ms(), ctx.services.get("router_hooks"))
        core.record_fills(ctx, client, intent, doc)
        if doc["status"] != S.FILLED.value:
            return core.finish(ctx, intent, core.result_for(intent, "e", doc["status"], doc=doc, reason=doc.get("reason", "")))
        filled = dec(doc["filled_qty"])
        # Spot fees come out of the received base asset: protect what we actually hold.
        fee = sum((Decimal(x["fee"]) for x in ctx.store.query(core.FILLS, {"intent_id": intent["intent_id"]})
                   if x["fee_asset"] != "USDT"), Decimal(0))
        intent = core.set_phase(ctx, intent, "PROTECT", held_qty=str(f.qty(filled - fee)))
        out.append(core.emit_result(core.result_for(intent, "e", S.FILLED.value, filled=filled,
                                                    avg=dec(doc.get("avg_price")), doc=doc)))
    return out + protect(env, ctx, intent, client, f)


def protect(env: Envelope, ctx: Context, intent: dict, client, f) -> list[Emit]:
    iid, held = intent["intent_id"], Decimal(intent["held_qty"])
    sl = f.price(Decimal(intent["sl_price"]))
    sl_limit = f.price(sl * (1 - Decimal(core.param(ctx, "spot_stop_limit_bps", 50)) / 10_000))
    tp = f.price(Decimal(intent["tp_price"])) if intent.get("tp_price") is not None else None
    if intent["exec_policy"] == "OCO" and tp is not None:
        tp_doc, sl_doc = place_oco(ctx, client, intent, held, tp, sl, sl_limit)
        if sl_doc["status"] != S.REJECTED.value:  # the list is atomic: refused means neither leg exists
            core.strategy_event(ctx, "TP_SL_PLACED", iid, {"intent_id": iid, "symbol": intent["symbol"], "kind": "OCO",
                                                          "tp": str(tp), "sl": str(sl),
                                                          "client_order_ids": [tp_doc["client_order_id"],
                                                                               sl_doc["client_order_id"]]})
            return core.finish(ctx, intent, core.result_for(intent, "oco", S.ACCEPTED.value, filled=held,
                                                            doc=sl_doc, reason="oco"))
        logger.warning("OCO for {} refused ({}); placing TP and SL separately", iid, sl_doc.get("reason"))
    notes: list[str] = []
    stop = None
    if intent["exec_policy"] == "OCO":
        stop = _venue_leg(ctx, client, intent, "sl", "STOP_LOSS_LIMIT", held, price=sl_limit, stop_price=sl, tif="GTC",
                          purpose="STOP")
        if stop["status"] not in PLACED:
            notes.append(f"sl refused ({stop.get('reason', '')})")
            stop = None
    tp_placed = False
    if tp is not None:
        tp_doc = _venue_leg(ctx, client, intent, "tp", "LIMIT_MAKER", held, price=tp, purpose="TAKE_PROFIT")
        tp_placed = tp_doc["status"] in PLACED
        if not tp_placed:
            notes.append(f"tp refused ({tp_doc.get('reason', '')})")
    if stop is None:
        arm(ctx, intent, held, sl)
    if stop is None or tp_placed:  # something to link locally
        _schedule_watch(env, ctx, iid, intent["symbol"])
    kind = "STOP" if stop is not None else "GUARD"
    core.strategy_event(ctx, "TP_SL_PLACED", iid, {"intent_id": iid, "symbol": intent["symbol"], "kind": kind,
                                                  "tp": None if tp is None else str(tp), "sl": str(sl),
                                                  "notes": notes})
    leg, reason = ("sl", "separate_tp_sl") if stop is not None else ("guard", "guard_stop")
    return core.finish(ctx, intent, core.result_for(intent, leg, S.ACCEPTED.value, filled=held, doc=stop,
                                                    reason="; ".join([reason, *notes])))


def _venue_leg(ctx: Context, client, intent: dict, leg: str, order_type: str, qty: Decimal, **kw) -> dict:
    doc = legs.ensure_leg_doc(ctx.store, legs.new_leg_doc(intent, leg, order_type=order_type, side="SELL", qty=qty,
                                                          now_ms=ctx.now_ms(), **kw))
    return legs.place(ctx.store, client, doc, ctx.now_ms(), ctx.services.get("router_hooks"))


# --- native OCO --------------------------------------------------------------------------------------


def place_oco(ctx: Context, client, intent: dict, qty: Decimal, tp: Decimal, sl: Decimal,
              sl_limit: Decimal) -> tuple[dict, dict]:
    """Both OCO legs as ``orders`` documents, with the same exactly-once recipe as a single leg."""
    now = ctx.now_ms()
    tp_doc = legs.ensure_leg_doc(ctx.store, legs.new_leg_doc(intent, "otp", order_type="LIMIT_MAKER", side="SELL",
                                                             qty=qty, now_ms=now, price=tp, purpose="TAKE_PROFIT"))
    sl_doc = legs.ensure_leg_doc(ctx.store, legs.new_leg_doc(intent, "osl", order_type="STOP_LOSS_LIMIT", side="SELL",
                                                             qty=qty, now_ms=now, price=sl_limit, stop_price=sl,
                                                             tif="GTC", purpose="STOP"))
    docs = [tp_doc, sl_doc]
    status = S(sl_doc["status"])  # the stop leg moves last: SUBMITTED there means both are
    if status == S.INITIALIZED:
        docs = [legs._move(ctx.store, d, OrderEvent.ORDER_SUBMITTED, now) if d["status"] == S.INITIALIZED.value
                else d for d in docs]
        hooks = ctx.services.get("router_hooks") or {}
        if hooks.get("after_submitted"):
            hooks["after_submitted"](docs[1])
        docs = _send_oco(ctx, client, intent, docs)
    elif status in (S.SUBMITTED, S.UNKNOWN):
        # A previous attempt died mid-request (SUBMITTED) or lost the answer (UNKNOWN): ask, never assume.
        docs = _resolve_oco(ctx, client, intent, docs)
    return docs[0], docs[1]


def _send_oco(ctx: Context, client, intent: dict, docs: list[dict]) -> list[dict]:
    tp_doc, sl_doc = docs
    now = ctx.now_ms()
    try:
        answers = client.oco(symbol=intent["symbol"], side="SELL", qty=dec(sl_doc["qty"]), tp_price=dec(tp_doc["price"]),
                             sl_stop=dec(sl_doc["stop_price"]), sl_limit=dec(sl_doc["price"]),
                             list_client_id=client_order_id(intent["intent_id"], "oco"),
                             tp_client_id=tp_doc["client_order_id"], sl_client_id=sl_doc["client_order_id"])
    except AlreadyAccepted:
        return _resolve_oco(ctx, client, intent, docs)
    except (VenueUnknown, VenueRateLimited) as exc:
        docs = [legs._move(ctx.store, d, OrderEvent.ORDER_TIMED_OUT, now, {"reason": str(exc)[:200]})
                if d["status"] == S.SUBMITTED.value else d for d in docs]
        if isinstance(exc, VenueRateLimited):
            raise RetryableError(f"rate limited sending the OCO of {intent['intent_id']}") from exc
        return _resolve_oco(ctx, client, intent, docs)
    except VenueRejected as exc:
        return [legs._move(ctx.store, d, OrderEvent.ORDER_REJECTED, now,
                           {"reason": f"{exc.code}: {exc.msg}", "reject_code": exc.code}) for d in docs]
    by_cid = {a.client_order_id: a for a in answers}
    return [legs.adopt(ctx.store, d, by_cid[d["client_order_id"]], now) if d["client_order_id"] in by_cid
            else legs.adopt(ctx.store, d, legs._query(client, d), now) for d in docs]


def _resolve_oco(ctx: Context, client, intent: dict, docs: list[dict]) -> list[dict]:
    now = ctx.now_ms()
    docs = [legs._move(ctx.store, d, OrderEvent.ORDER_TIMED_OUT, now, {"reason": "resumed after crash"})
            if d["status"] == S.SUBMITTED.value else d for d in docs]
    try:
        found = [legs._query(client, d) for d in docs]
    except OrderNotFound:
        logger.info("OCO of {} never reached the venue; sending it now", intent["intent_id"])
        return _send_oco(ctx, client, intent, docs)
    return [legs.adopt(ctx.store, d, vo, now) for d, vo in zip(docs, found, strict=True)]


# --- guard stop and the watch ----------------------------------------------------------------------------


def arm(ctx: Context, intent: dict, qty: Decimal, sl: Decimal) -> None:
    g = GuardArmed(intent_id=intent["intent_id"], symbol=intent["symbol"], side="SELL", qty=qty, sl_price=sl,
                   armed_at=ctx.now_ms(), pos_id=intent.get("pos_id", ""))
    key = keys.guard_stop(intent["symbol"], intent["intent_id"])
    ctx.redis.set(key, msgspec.json.encode(g).decode(), nx=True)  # NX: a redelivery never re-arms a fired guard
    ctx.redis.sadd(keys.guard_index(intent["symbol"]), intent["intent_id"])
    ctx.store.insert_if_absent(GUARDS, intent["intent_id"], msgspec.to_builtins(g))


def disarm(ctx: Context, intent: dict) -> bool:
    """ARMED -> DISARMED (the TP filled, or the intent was cancelled). False if it already fired."""
    key = keys.guard_stop(intent["symbol"], intent["intent_id"])
    done = bool(ctx.redis.eval(_SWITCH, 1, key, "ARMED", "DISARMED"))
    ctx.redis.srem(keys.guard_index(intent["symbol"]), intent["intent_id"])
    if done:
        ctx.store.update_if(GUARDS, intent["intent_id"], {"state": "DISARMED", "disarmed_at": ctx.now_ms()}, {})
    return done


def stop_watch(ctx: Context, intent_id: str) -> None:
    scheduler.cancel(ctx.redis, f"router:guard_check:{intent_id}:")


def _schedule_watch(env: Envelope, ctx: Context, intent_id: str, symbol: str) -> None:
    core.schedule_timer(ctx, env, "guard_check", intent_id, ctx.now_ms() + core.param(ctx, "guard_poll_ms", 500),
                        symbol=symbol)


def guard_check(env: Envelope, ctx: Context, t: TimerFired) -> list[Emit]:
    """One look at an intent's protection: venue TP/SL legs and the local guard stop."""
    intent = ctx.store.get(core.INTENTS, t.ref)
    if intent is None:
        return []
    client = core.venue(ctx).spot
    venue_legs = {leg: d for leg in ("tp", "sl") if (d := ctx.store.get(legs.ORDERS, leg_key(t.ref, leg)))}
    venue_legs = {leg: legs.refresh(ctx.store, client, d, ctx.now_ms()) if d["status"] in LIVE else d
                  for leg, d in venue_legs.items()}
    tp, sl = venue_legs.get("tp"), venue_legs.get("sl")
    raw = ctx.redis.get(keys.guard_stop(intent["symbol"], t.ref))
    guard = msgspec.json.decode(raw, type=GuardArmed) if raw else None
    # One side executed at the venue: the other must go (nothing links them there).
    if sl is not None and sl["status"] in EXECUTED:
        _cancel_live(ctx, client, [tp])
        return []
    if tp is not None and tp["status"] == S.FILLED.value:
        _cancel_live(ctx, client, [sl])
        if guard is not None:
            disarm(ctx, intent)
        return []
    if guard is not None and guard.state == "FIRED":
        return _exit(ctx, client, intent, guard, tp)
    if guard is not None and guard.state == "ARMED":
        mid = client.top_of_book(intent["symbol"]).mid
        if mid is not None and mid <= guard.sl_price:
            return _fire(ctx, client, intent, guard, tp, mid)
    if (guard is not None and guard.state == "ARMED") or any(d["status"] in LIVE for d in venue_legs.values()):
        _schedule_watch(env, ctx, t.ref, intent["symbol"])
    return []


def _fire(ctx: Context, client, intent: dict, guard: GuardArmed, tp: dict | None, mid: Decimal) -> list[Emit]:
    key = keys.guard_stop(intent["symbol"], intent["intent_id"])
    if not ctx.redis.eval(_SWITCH, 1, key, "ARMED", "FIRED"):
        return []  # disarmed meanwhile; a racing monitor that fired it emits the exit itself
    core.incr_metric(ctx, "guard_fired_count")
    ctx.redis.srem(keys.guard_index(intent["symbol"]), intent["intent_id"])
    ctx.store.update_if(GUARDS, intent["intent_id"], {"state": "FIRED", "fired_at": ctx.now_ms(),
                                                      "fired_mid": str(mid)}, {})
    hooks = ctx.services.get("router_hooks") or {}
    if hooks.get("after_guard_fired"):
        hooks["after_guard_fired"](guard)  # tests: crash between the fire and the exit
    return _exit(ctx, client, intent, guard, tp)


def _exit(ctx: Context, client, intent: dict, guard: GuardArmed, tp: dict | None) -> list[Emit]:
    exit_id = f"{intent['intent_id']}:guard"
    if ctx.store.get(core.INTENTS, exit_id) is not None:
        return []  # the exit is already with S4
    # Cancel first: the take-profit holds the base asset, and a fill that beat the cancel shrinks the exit.
    sold = Decimal(0)
    if tp is not None:
        tp = _cancel_live(ctx, client, [tp])[0]
        sold = dec(tp.get("filled_qty")) or Decimal(0)
    f = client.filters(intent["symbol"])
    qty = f.qty(guard.qty - sold)
    if qty <= 0 or qty < f.min_qty:
        logger.info("guard of {} fired with nothing left to sell (take-profit filled {})", intent["intent_id"], sold)
        return []
    exit_intent = OrderIntent(intent_id=exit_id, market="SPOT", symbol=intent["symbol"], side=guard.side, qty=qty,
                              exec_policy="MARKET", purpose="STOP", reduce_only=True, pos_id=guard.pos_id,
                              parent_intent_id=intent["intent_id"])
    return [Emit(keys.ORD_COMMANDS, SubmitOrder(intent=exit_intent), exit_id)]


def _cancel_live(ctx: Context, client, docs: list[dict | None]) -> list[dict]:
    out = []
    for d in docs:
        if d is None:
            continue
        if not ORDER_FSM.is_terminal(S(d["status"])) and d["status"] != S.INITIALIZED.value:
            d = legs.cancel(ctx.store, client, d, ctx.now_ms())
        out.append(d)
    return out
