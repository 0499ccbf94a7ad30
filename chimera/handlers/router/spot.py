"""SPOT entries with protection: native OCO first, a separate stop second, a guard stop last.

The guard stop is armed in ``guard:{stop}:<SYM>:<intent_id>`` (JSON ``GuardArmed``) and indexed per
symbol. ``guard_check`` timers compare the venue's mid with the stop; the ARMED -> FIRED switch is
one compare-and-set script on the guard key, and the exit intent id is derived from the entry's,
so even two monitors firing at once produce ONE market exit at the venue.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from loguru import logger

from chimera.handlers.router import core, legs
from chimera.handlers.router.legs import dec, leg_key
from chimera.schemas.envelope import Envelope
from chimera.schemas.execution import GuardArmed
from chimera.schemas.messages import OrderIntent, SubmitOrder, TimerFired
from chimera.schemas.states import OrderStatus as S
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import VenueRejected, client_order_id
from chimera.workers.errors import PermanentError
from chimera.workers.handler import Context

_FIRE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local g = cjson.decode(raw)
if g['state'] ~= 'ARMED' then return 0 end
g['state'] = 'FIRED'
redis.call('SET', KEYS[1], cjson.encode(g))
return 1
"""


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
    held = Decimal(intent["held_qty"])
    sl = f.price(Decimal(intent["sl_price"]))
    if intent["exec_policy"] == "OCO" and intent.get("tp_price") is not None and not intent.get("oco_failed"):
        iid = intent["intent_id"]
        try:
            client.oco(symbol=intent["symbol"], side="SELL", qty=held, tp_price=f.price(Decimal(intent["tp_price"])),
                       sl_stop=sl, sl_limit=f.price(sl * Decimal("0.995")),
                       list_client_id=client_order_id(iid, "oco"), tp_client_id=client_order_id(iid, "tp"),
                       sl_client_id=client_order_id(iid, "sl"))
        except VenueRejected as exc:
            logger.warning("OCO for {} refused ({}); falling back", iid, exc)
            ctx.store.update_if(core.INTENTS, iid, {"oco_failed": f"{exc.code}: {exc.msg}"}, {"phase": "PROTECT"})
        else:
            core.strategy_event(ctx, "TP_SL_PLACED", iid, {"intent_id": iid, "symbol": intent["symbol"], "kind": "OCO",
                                                          "tp": intent["tp_price"], "sl": str(sl)})
            return out + core.finish(ctx, intent, core.result_for(intent, "oco", S.ACCEPTED.value, filled=held,
                                                                  reason="oco"))
    # Fallback 1: a separate stop-loss order at the venue.
    stop = core._new_leg(ctx, intent, "sl", "STOP_LOSS_LIMIT", held, price=f.price(sl * Decimal("0.995")), tif="GTC",
                         stop_price=sl, side="SELL", with_book=False)
    stop = legs.place(ctx.store, client, stop, ctx.now_ms())
    if stop["status"] in (S.ACCEPTED.value, S.TRIGGERED.value):
        core.strategy_event(ctx, "TP_SL_PLACED", intent["intent_id"], {"intent_id": intent["intent_id"],
                                                                      "symbol": intent["symbol"], "kind": "STOP"})
        return out + core.finish(ctx, intent, core.result_for(intent, "sl", stop["status"], filled=held, doc=stop))
    # Fallback 2: the local guard stop.
    arm(env, ctx, intent, held, sl)
    return out + core.finish(ctx, intent, core.result_for(intent, "guard", S.ACCEPTED.value, filled=held,
                                                          reason="guard_stop"))


def arm(env: Envelope, ctx: Context, intent: dict, qty: Decimal, sl: Decimal) -> None:
    g = GuardArmed(intent_id=intent["intent_id"], symbol=intent["symbol"], side="SELL", qty=qty, sl_price=sl,
                   armed_at=ctx.now_ms(), pos_id=intent.get("pos_id", ""))
    key = keys.guard_stop(intent["symbol"], intent["intent_id"])
    body = msgspec.json.encode(g).decode()
    ctx.redis.set(key, body, nx=True)  # NX: a redelivery never re-arms a guard that already fired
    ctx.redis.sadd(keys.guard_index(intent["symbol"]), intent["intent_id"])
    ctx.store.upsert("guard_stops", intent["intent_id"], {**msgspec.to_builtins(g)})
    core.schedule_timer(ctx, env, "guard_check", intent["intent_id"], ctx.now_ms() + core.param(ctx, "guard_poll_ms", 500),
                        symbol=intent["symbol"])


def guard_check(env: Envelope, ctx: Context, t: TimerFired) -> list[Emit]:
    symbol = t.data.get("symbol", "")
    key = keys.guard_stop(symbol, t.ref)
    raw = ctx.redis.get(key)
    if raw is None:
        return []
    g = msgspec.json.decode(raw, type=GuardArmed)
    if g.state != "ARMED":
        return []
    book = core.venue(ctx).spot.book(symbol, 1)
    bid = book.bids[0][0] if book.bids else None
    if bid is None or bid > g.sl_price:
        core.schedule_timer(ctx, env, "guard_check", t.ref, ctx.now_ms() + core.param(ctx, "guard_poll_ms", 500),
                            symbol=symbol)
        return []
    if not ctx.redis.eval(_FIRE, 1, key):
        return []
    core.incr_metric(ctx, "guard_fired_count")
    ctx.redis.srem(keys.guard_index(symbol), t.ref)
    ctx.store.update_if("guard_stops", t.ref, {"state": "FIRED", "fired_at": ctx.now_ms(), "fired_bid": str(bid)}, {})
    exit_intent = OrderIntent(intent_id=f"{t.ref}:guard", market="SPOT", symbol=symbol, side=g.side, qty=g.qty,
                              exec_policy="MARKET", purpose="STOP", reduce_only=True, pos_id=g.pos_id,
                              parent_intent_id=t.ref)
    return [Emit(keys.ORD_COMMANDS, SubmitOrder(intent=exit_intent), exit_intent.intent_id)]


def guard_leg_key(intent_id: str) -> str:
    return leg_key(f"{intent_id}:guard", "mkt")
