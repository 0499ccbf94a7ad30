"""S4 order router: SubmitOrder / CancelOrder on ``ord:{commands}``, its own timers on ``ord:{timers}``.

An intent is persisted in ``order_intents`` (key ``intent_id``) and each exchange order it needs
in ``orders`` (key ``<intent_id>:<leg>``, see ``legs.py``). The handler is re-entrant: every
delivery of the same command (or timer) reads where the intent stands and continues from there,
so redeliveries, crashes and duplicates converge on one set of orders at the venue. A command
for an intent already finished re-emits its stored result.

Policies: MARKET; LIMIT (GTC); MakerThenTaker (GTX at the touch, a wait window from the bundle
on the scheduler, then cancel + MARKET for the rest); TWAP (slices on ``prod:{exec}:twap:queue``
and the scheduler); STOP/TAKE_PROFIT (futures algo orders, reduce-only, MARK_PRICE); SPOT OCO with
fallback to separate TP/SL orders, then a guard stop (``spot.py``). Cancels in ``cancel.py``; venue-side
changes to S4's orders from ``venue:{reports}`` in ``reports.py``.
"""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
from loguru import logger

from chimera.errors import NotYetImplemented, PermanentError, RetryableError
from chimera.handlers.common import kill_mode, strategy_event, venue
from chimera.handlers.router import legs
from chimera.handlers.router.legs import dec, leg_key
from chimera.schemas.envelope import Envelope, to_builtins
from chimera.schemas.execution import GuardArmed
from chimera.schemas.messages import (
    CancelOrder,
    OrderIntent,
    OrderResult,
    SubmitOrder,
    TimerFired,
    VenueReport,
)
from chimera.schemas.states import ORDER_FSM, OrderStatus
from chimera.streams import keys
from chimera.streams.producer import Emit, envelope_for
from chimera.venues.binance.adapter import VenueError
from chimera.workers import scheduler
from chimera.workers.handler import Context

INTENTS = "order_intents"
FILLS = "fills"
EXIT_PURPOSES = {"EXIT", "STOP", "TAKE_PROFIT", "REDUCE", "FLATTEN"}
S = OrderStatus


# --- context helpers -------------------------------------------------------------------------------


def param(ctx: Context, name: str, default):
    """Router parameters from the active bundle: ``router.<name>`` or ``{"router": {name: ...}}``."""
    return ctx.config.param("router", name, default)


def is_reducing(intent: dict) -> bool:
    return bool(intent.get("reduce_only")) or intent.get("purpose") in EXIT_PURPOSES


# --- results and documents --------------------------------------------------------------------------


def result_for(intent: dict, leg: str, status: str, *, filled: Decimal = Decimal(0), avg: Decimal | None = None,
               doc: dict | None = None, reason: str = "") -> OrderResult:
    return OrderResult(
        intent_id=intent["intent_id"], leg=leg, client_order_id=(doc or {}).get("client_order_id", ""),
        symbol=intent["symbol"], status=status, side=intent["side"], purpose=intent.get("purpose", "ENTRY"),
        venue_order_id=(doc or {}).get("venue_order_id", ""), qty=Decimal(intent["qty"]), filled_qty=filled,
        avg_price=avg, reason=reason, pos_id=intent.get("pos_id", ""),
    )


def emit_result(res: OrderResult) -> Emit:
    return Emit(keys.ORD_RESULTS, res, f"{res.intent_id}:{res.leg}:{res.status}")


def finish(ctx: Context, intent: dict, res: OrderResult) -> list[Emit]:
    """Record the intent's final result (re-emitted as-is for any later duplicate command)."""
    ctx.store.update_if(INTENTS, intent["intent_id"], {"phase": "DONE", "result": to_builtins(res),
                                                       "updated_at": ctx.now_ms()}, {"phase": intent["phase"]})
    return [emit_result(res)]


def set_phase(ctx: Context, intent: dict, phase: str, **extra) -> dict:
    if not ctx.store.update_if(INTENTS, intent["intent_id"], {"phase": phase, **extra}, {"phase": intent["phase"]}):
        # Another holder (after a lock expiry) moved it: retry, the handler re-reads and continues from there.
        raise RetryableError(f"intent {intent['intent_id']} moved from {intent['phase']} under us")
    return {**intent, "phase": phase, **extra}


def snapshot_book(ctx: Context, client, symbol: str) -> dict:
    """Mid and top-3 levels at send time, for fills' slippage (REST depth: one more round trip)."""
    try:
        book = client.book(symbol, 5)
    except VenueError as exc:
        logger.warning("no book for {} at send: {}", symbol, exc)
        return {}
    return {"mid_at_send": None if book.mid is None else str(book.mid),
            "top3_at_send": {"bids": [[str(p), str(q)] for p, q in book.bids[:3]],
                             "asks": [[str(p), str(q)] for p, q in book.asks[:3]]},
            "best_bid": str(book.bids[0][0]) if book.bids else None,
            "best_ask": str(book.asks[0][0]) if book.asks else None}


def record_fills(ctx: Context, client, intent: dict, doc: dict) -> None:
    """One ``fills`` document per venue trade of the leg (key: market:symbol:trade id)."""
    if not doc.get("venue_order_id") or not dec(doc.get("filled_qty")) or doc.get("algo"):
        return
    try:
        trades = client.trades(doc["symbol"], doc["venue_order_id"])
    except VenueError as exc:  # fills can be backfilled by the reconciler; the order state is what matters
        logger.warning("trades of {} unavailable: {}", doc["client_order_id"], exc)
        return
    for t in trades:
        ctx.store.upsert(FILLS, fill_key(doc, t["id"]), fill_doc(
            intent, doc, trade_id=t["id"], price=Decimal(str(t["price"])), qty=Decimal(str(t["qty"])),
            fee=str(t.get("commission", "0")), fee_asset=t.get("commissionAsset", "USDT"),
            is_maker=bool(t.get("maker", t.get("isMaker", False))), ts=int(t.get("time", 0))))


def fill_key(doc: dict, trade_id) -> str:
    return f"{doc['market']}:{doc['symbol']}:{trade_id}"


def fill_doc(intent: dict, doc: dict, *, trade_id, price: Decimal, qty: Decimal, fee: str, fee_asset: str,
             is_maker: bool, ts: int) -> dict:
    """A fill with the book at send and its slippage vs the intent's arrival mid (bps, positive = worse)."""
    arrival = dec(intent.get("arrival_mid"))
    slip = None
    if arrival:
        sign = 1 if doc["side"] == "BUY" else -1
        slip = float((price - arrival) / arrival * 10_000 * sign)
    return {"trade_id": str(trade_id), "intent_id": doc["intent_id"], "leg": doc["leg"],
            "client_order_id": doc["client_order_id"], "symbol": doc["symbol"], "side": doc["side"],
            "qty": str(qty), "price": str(price), "fee": fee, "fee_asset": fee_asset, "is_maker": is_maker,
            "mid_at_send": doc.get("mid_at_send"), "top3_at_send": doc.get("top3_at_send"),
            "arrival_mid": None if arrival is None else str(arrival), "slippage_bps": slip,
            "purpose": doc.get("purpose"), "pos_id": doc.get("pos_id", ""), "ts": ts}


def aggregate(docs: list[dict]) -> tuple[Decimal, Decimal | None]:
    filled = sum((dec(d.get("filled_qty")) or Decimal(0) for d in docs), Decimal(0))
    notional = sum(((dec(d.get("filled_qty")) or 0) * (dec(d.get("avg_price")) or 0) for d in docs), Decimal(0))
    return filled, (notional / filled if filled else None)


# --- metrics (``ord:{metrics}:router``; the gateway's /metrics reads them) -------------------------------

ACK_SAMPLES = 1000  # latencies kept for router_p95: recent enough to move, enough for a stable tail
COUNTED_TTL_MS = 7 * 24 * 3600 * 1000  # longer than any redelivery of the same intent can arrive
UNACKED = {S.INITIALIZED.value, S.SUBMITTED.value, S.UNKNOWN.value}
# Marker and increment in one step: a redelivery passing the same point again adds nothing, and no crash
# can leave the marker without the count.
_COUNT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
return false
"""


def incr_metric(ctx: Context, name: str, subject: str | None = None) -> None:
    """``name`` += 1; with ``subject`` (e.g. the intent id) at most once per subject whatever the redeliveries."""
    if ctx.redis is None:
        return
    if subject is None:
        ctx.redis.hincrby(keys.ROUTER_COUNTERS, name, 1)
    else:
        ctx.redis.eval(_COUNT_ONCE, 2, keys.ROUTER_COUNTERS, keys.router_counted(name, subject), name,
                       COUNTED_TTL_MS)


def command_ms(env: Envelope, intent: dict) -> int:
    """When the work that sends a leg was asked for: a timer's due time, else the command's publish time."""
    if isinstance(env.payload, TimerFired):
        return env.payload.due_ms
    return env.event_time or int(intent["created_at"])


def place_leg(env: Envelope, ctx: Context, client, intent: dict, doc: dict) -> dict:
    """``legs.place`` + the command → venue-ack latency, sampled by the delivery that got the venue's answer."""
    before = doc["status"]
    hooks = ctx.services.get("router_hooks")
    doc = legs.place(ctx.store, client, doc, ctx.now_ms(), hooks)
    if ctx.redis is not None and before in UNACKED and doc["status"] not in UNACKED:
        pipe = ctx.redis.pipeline(transaction=False)
        pipe.lpush(keys.ROUTER_ACK_MS, max(0, ctx.now_ms() - command_ms(env, intent)))
        pipe.ltrim(keys.ROUTER_ACK_MS, 0, ACK_SAMPLES - 1)
        pipe.execute()
    return doc


def schedule_timer(ctx: Context, env: Envelope, name: str, intent_id: str, due_ms: int, **data: str) -> None:
    timer = TimerFired(name=name, ref=intent_id, due_ms=due_ms, data=data)
    idem = f"timer:{name}:{intent_id}:{data.get('slice', '')}:{due_ms}"
    out = envelope_for(Emit(keys.ROUTER_TIMERS, timer, idem), parent=env, now_ms=ctx.now_ms())
    scheduler.schedule(ctx.redis, f"router:{name}:{intent_id}:{data.get('slice', '')}", due_ms,
                       keys.ROUTER_TIMERS, out)


# --- entry points -------------------------------------------------------------------------------------


def handle(env: Envelope, ctx: Context) -> list[Emit]:
    p = env.payload
    if isinstance(p, SubmitOrder):
        return submit(env, ctx, p.intent)
    if isinstance(p, CancelOrder):
        from chimera.handlers.router.cancel import cancel_intent

        return cancel_intent(env, ctx, p)
    if isinstance(p, TimerFired):
        return on_timer(env, ctx, p)
    if isinstance(p, VenueReport):
        from chimera.handlers.router.reports import on_report

        return on_report(env, ctx, p)
    raise PermanentError(f"s4 does not handle {env.type}")


def submit(env: Envelope, ctx: Context, oi: OrderIntent) -> list[Emit]:
    doc = {**to_builtins(oi), "phase": "NEW", "created_at": ctx.now_ms(), "updated_at": ctx.now_ms()}
    doc.pop("type", None)
    ctx.store.insert_if_absent(INTENTS, oi.intent_id, doc)
    intent = ctx.store.get(INTENTS, oi.intent_id)
    if intent["phase"] == "DONE":  # seen before: the same answer again, no new order
        return [emit_result(msgspec.convert(intent["result"], OrderResult))]
    if intent["phase"] == "NEW":
        mode = kill_mode(ctx)
        if mode and not is_reducing(intent):
            res = result_for(intent, "*", S.REJECTED.value, reason=f"KILL_SWITCH:{mode}")
            return finish(ctx, intent, res)
    policy = intent["exec_policy"]
    if intent["market"] == "SPOT" and policy in ("OCO", "GUARD"):
        from chimera.handlers.router import spot

        return spot.run(env, ctx, intent)
    if policy == "MARKET" or (policy == "MakerThenTaker" and is_reducing(intent) and intent.get("purpose") == "FLATTEN"):
        return run_single(env, ctx, intent, "mkt", "MARKET")
    if policy == "LIMIT":
        return run_single(env, ctx, intent, "lmt", "LIMIT", tif="GTC")
    if policy == "STOP":
        return run_stop(env, ctx, intent)
    if policy == "MakerThenTaker":
        return run_maker(env, ctx, intent)
    if policy == "TWAP":
        return run_twap(env, ctx, intent)
    raise NotYetImplemented(f"exec_policy {policy} for {intent['market']} is not implemented in S4 yet")


# --- MARKET / LIMIT ------------------------------------------------------------------------------------


def _new_leg(ctx: Context, intent: dict, leg: str, order_type: str, qty: Decimal, *, price=None, tif=None,
             stop_price=None, algo=False, side=None, with_book=True) -> dict:
    """Persist the leg (INITIALIZED) with the book at send, before anything goes on the wire."""
    key = leg_key(intent["intent_id"], leg)
    existing = ctx.store.get(legs.ORDERS, key)
    if existing is not None:
        return existing
    client = venue(ctx).for_market(intent["market"])
    book = snapshot_book(ctx, client, intent["symbol"]) if with_book else {}
    if with_book and not intent.get("arrival_mid") and book.get("mid_at_send"):
        ctx.store.update_if(INTENTS, intent["intent_id"], {"arrival_mid": book["mid_at_send"]}, {"phase": intent["phase"]})
        intent["arrival_mid"] = book["mid_at_send"]
    doc = legs.new_leg_doc(intent, leg, order_type=order_type, side=side or intent["side"], qty=qty,
                           now_ms=ctx.now_ms(), price=price, tif=tif, stop_price=stop_price,
                           reduce_only=bool(intent.get("reduce_only")) and intent["market"] == "FUT", algo=algo,
                           book=book)
    return legs.ensure_leg_doc(ctx.store, doc)


def _filters(ctx: Context, intent: dict):
    return venue(ctx).for_market(intent["market"]).filters(intent["symbol"])


def run_single(env: Envelope, ctx: Context, intent: dict, leg: str, order_type: str,
               tif: str | None = None) -> list[Emit]:
    client = venue(ctx).for_market(intent["market"])
    f = _filters(ctx, intent)
    qty = f.qty(Decimal(intent["qty"]))
    price = f.price(Decimal(intent["price"])) if order_type == "LIMIT" else None
    if intent["phase"] == "NEW":
        intent = set_phase(ctx, intent, "WORKING")
    doc = _new_leg(ctx, intent, leg, order_type, qty, price=price, tif=tif)
    doc = place_leg(env, ctx, client, intent, doc)
    record_fills(ctx, client, intent, doc)
    status = doc["status"]
    filled, avg = aggregate([doc])
    if ORDER_FSM.is_terminal(S(status)) or order_type == "LIMIT":
        return finish(ctx, intent, result_for(intent, leg, status, filled=filled, avg=avg, doc=doc,
                                              reason=doc.get("reason", "")))
    return [emit_result(result_for(intent, leg, status, filled=filled, avg=avg, doc=doc))]


# --- STOP / TAKE_PROFIT (futures algo orders) --------------------------------------------------------------


def run_stop(env: Envelope, ctx: Context, intent: dict) -> list[Emit]:
    if intent["market"] != "FUT":
        raise NotYetImplemented("a standalone SPOT stop goes through exec_policy=OCO/GUARD")
    client = venue(ctx).fut
    f = client.filters(intent["symbol"])
    tp = intent.get("purpose") == "TAKE_PROFIT"
    trigger = dec(intent.get("tp_price") if tp else (intent.get("stop_price") or intent.get("sl_price")))
    if trigger is None:
        raise PermanentError(f"intent {intent['intent_id']}: a STOP needs stop_price/sl_price (or tp_price)")
    leg = "tp" if tp else "sl"
    if intent["phase"] == "NEW":
        intent = set_phase(ctx, intent, "WORKING")
    doc = _new_leg(ctx, intent, leg, "TAKE_PROFIT_MARKET" if tp else "STOP_MARKET", f.qty(Decimal(intent["qty"])),
                   stop_price=f.price(trigger), algo=True, with_book=False)
    doc = {**doc, "reduce_only": True}
    doc = place_leg(env, ctx, client, intent, doc)
    res = result_for(intent, leg, doc["status"], doc=doc, reason=doc.get("reason", ""))
    if doc["status"] in (S.ACCEPTED.value, S.TRIGGERED.value, S.FILLED.value):
        strategy_event(ctx, "TP_SL_PLACED", intent["intent_id"], {
            "intent_id": intent["intent_id"], "pos_id": intent.get("pos_id", ""), "symbol": intent["symbol"],
            "leg": leg, "client_order_id": doc["client_order_id"], "trigger": doc["stop_price"],
            "working_type": "MARK_PRICE"})
    return finish(ctx, intent, res)


# --- MakerThenTaker --------------------------------------------------------------------------------------


def run_maker(env: Envelope, ctx: Context, intent: dict) -> list[Emit]:
    client = venue(ctx).for_market(intent["market"])
    f = client.filters(intent["symbol"])
    qty = f.qty(Decimal(intent["qty"]))
    if intent["phase"] == "NEW":
        wait_ms = param(ctx, "maker_wait_ms", 3000)
        intent = set_phase(ctx, intent, "MAKER", maker_deadline=ctx.now_ms() + wait_ms)
    if intent["phase"] == "MAKER":
        book = snapshot_book(ctx, client, intent["symbol"])
        touch = book.get("best_bid") if intent["side"] == "BUY" else book.get("best_ask")
        if touch is None:
            return _taker(env, ctx, intent, reason="no book for a maker price")
        key = leg_key(intent["intent_id"], "mk")
        if ctx.store.get(legs.ORDERS, key) is None:
            ctx.store.insert_if_absent(legs.ORDERS, key, legs.new_leg_doc(
                intent, "mk", order_type="LIMIT", side=intent["side"], qty=qty, now_ms=ctx.now_ms(),
                price=f.price(Decimal(touch), intent["side"], passive=True), tif="GTX",
                reduce_only=bool(intent.get("reduce_only")) and intent["market"] == "FUT", book=book))
            if not intent.get("arrival_mid") and book.get("mid_at_send"):
                ctx.store.update_if(INTENTS, intent["intent_id"], {"arrival_mid": book["mid_at_send"]}, {"phase": "MAKER"})
                intent["arrival_mid"] = book["mid_at_send"]
        doc = place_leg(env, ctx, client, intent, ctx.store.get(legs.ORDERS, key))
        if doc["status"] in (S.REJECTED.value, S.EXPIRED.value):  # GTX would have taken: go straight to taker
            incr_metric(ctx, "maker_reject_count", intent["intent_id"])
            return _taker(env, ctx, intent, reason=f"maker refused: {doc.get('reason', '')}")
        incr_metric(ctx, "maker_sent_count", intent["intent_id"])  # resting (or filled): the fill ratio's base
        intent = set_phase(ctx, intent, "MAKER_WAIT")
        if doc["status"] == S.FILLED.value:
            return _maker_done(ctx, intent, doc)
        _schedule_check(env, ctx, intent)
        return [emit_result(result_for(intent, "mk", doc["status"], doc=doc))]
    if intent["phase"] == "MAKER_WAIT":
        return _maker_check(env, ctx, intent)
    if intent["phase"] == "TAKER":
        return _taker(env, ctx, intent)
    return []


def _schedule_check(env: Envelope, ctx: Context, intent: dict) -> None:
    poll = param(ctx, "maker_poll_ms", 250)
    due = min(ctx.now_ms() + poll, int(intent["maker_deadline"]))
    schedule_timer(ctx, env, "maker_check", intent["intent_id"], due)


def _maker_check(env: Envelope, ctx: Context, intent: dict) -> list[Emit]:
    client = venue(ctx).for_market(intent["market"])
    doc = ctx.store.get(legs.ORDERS, leg_key(intent["intent_id"], "mk"))
    doc = legs.refresh(ctx.store, client, doc, ctx.now_ms())
    if doc["status"] == S.FILLED.value:
        return _maker_done(ctx, intent, doc)
    if ctx.now_ms() < int(intent["maker_deadline"]) and doc["status"] in (S.ACCEPTED.value, S.PARTIALLY_FILLED.value):
        _schedule_check(env, ctx, intent)
        return []
    # Window over: cancel the rest first (a fill that beats the cancel wins), then take.
    doc = legs.cancel(ctx.store, client, doc, ctx.now_ms())
    record_fills(ctx, client, intent, doc)
    if doc["status"] == S.FILLED.value:
        return _maker_done(ctx, intent, doc)
    incr_metric(ctx, "maker_timeout_count", intent["intent_id"])
    if dec(doc.get("filled_qty")):  # part filled inside the window: counts for the fill ratio too
        incr_metric(ctx, "maker_filled_count", intent["intent_id"])
    strategy_event(ctx, "CANCEL", f"{intent['intent_id']}:mk", {
        "intent_id": intent["intent_id"], "client_order_id": doc["client_order_id"], "reason": "maker_timeout"})
    return _taker(env, ctx, set_phase(ctx, intent, "TAKER"), reason="maker_timeout")


def _maker_done(ctx: Context, intent: dict, doc: dict) -> list[Emit]:
    incr_metric(ctx, "maker_filled_count", intent["intent_id"])
    client = venue(ctx).for_market(intent["market"])
    record_fills(ctx, client, intent, doc)
    filled, avg = aggregate([doc])
    return finish(ctx, intent, result_for(intent, "mk", S.FILLED.value, filled=filled, avg=avg, doc=doc,
                                          reason="maker"))


def _taker(env: Envelope, ctx: Context, intent: dict, reason: str = "") -> list[Emit]:
    if intent["phase"] != "TAKER":
        intent = set_phase(ctx, intent, "TAKER")
    client = venue(ctx).for_market(intent["market"])
    f = client.filters(intent["symbol"])
    mk = ctx.store.get(legs.ORDERS, leg_key(intent["intent_id"], "mk"))
    done = [mk] if mk else []
    rest = f.qty(Decimal(intent["qty"]) - aggregate(done)[0])
    if rest >= f.min_qty and rest > 0:
        doc = _new_leg(ctx, intent, "tk", "MARKET", rest)
        doc = place_leg(env, ctx, client, intent, doc)
        record_fills(ctx, client, intent, doc)
        done.append(doc)
    filled, avg = aggregate(done)
    last = done[-1] if done else None
    status = S.FILLED.value if filled >= f.qty(Decimal(intent["qty"])) else (last["status"] if last else S.REJECTED.value)
    return finish(ctx, intent, result_for(intent, "tk" if len(done) > 1 or not mk else "mk", status, filled=filled,
                                          avg=avg, doc=last, reason=reason))


# --- TWAP ----------------------------------------------------------------------------------------------------


def run_twap(env: Envelope, ctx: Context, intent: dict) -> list[Emit]:
    """Split into slices due every ``twap_interval_ms``; each slice is its own idempotent MARKET leg.

    The plan (slice sizes, due times) is persisted once; the queue ``prod:{exec}:twap:queue`` holds
    ``<intent_id>:<i>`` scored by due time and the scheduler turns due slices into timers, so a
    restarted router resumes where it stopped and a slice already sent is never sent again.
    """
    f = _filters(ctx, intent)
    if intent["phase"] == "NEW":
        n = max(1, param(ctx, "twap_slices", 4))
        interval = param(ctx, "twap_interval_ms", 1000)
        total = f.qty(Decimal(intent["qty"]))
        base = f.qty(total / n)
        sizes = [base] * (n - 1) + [total - base * (n - 1)]
        t0 = ctx.now_ms()
        plan = [{"i": i, "qty": str(q), "due": t0 + i * interval} for i, q in enumerate(sizes) if q > 0]
        intent = set_phase(ctx, intent, "TWAP", twap_plan=plan)
        pipe = ctx.redis.pipeline(transaction=False)
        for s in plan:
            pipe.zadd(keys.TWAP_QUEUE, {f"{intent['intent_id']}:{s['i']}": s["due"]})
        pipe.execute()
        for s in plan:
            schedule_timer(ctx, env, "twap_slice", intent["intent_id"], s["due"], slice=str(s["i"]))
        return []
    return []


def _twap_slice(env: Envelope, ctx: Context, intent: dict, i: int) -> list[Emit]:
    client = venue(ctx).for_market(intent["market"])
    plan = {s["i"]: s for s in intent["twap_plan"]}
    doc = _new_leg(ctx, intent, f"tw{i}", "MARKET", Decimal(plan[i]["qty"]))
    doc = place_leg(env, ctx, client, intent, doc)
    record_fills(ctx, client, intent, doc)
    ctx.redis.zrem(keys.TWAP_QUEUE, f"{intent['intent_id']}:{i}")
    docs = [ctx.store.get(legs.ORDERS, leg_key(intent["intent_id"], f"tw{j}")) for j in plan]
    if all(d is not None and ORDER_FSM.is_terminal(S(d["status"])) for d in docs):
        filled, avg = aggregate(docs)
        status = S.FILLED.value if filled >= sum(Decimal(s["qty"]) for s in plan.values()) else docs[-1]["status"]
        return finish(ctx, intent, result_for(intent, "twap", status, filled=filled, avg=avg, doc=docs[-1]))
    return [emit_result(result_for(intent, f"tw{i}", doc["status"], filled=dec(doc["filled_qty"]) or Decimal(0),
                                   avg=dec(doc.get("avg_price")), doc=doc))]


# --- timers ----------------------------------------------------------------------------------------


def on_timer(env: Envelope, ctx: Context, t: TimerFired) -> list[Emit]:
    intent = ctx.store.get(INTENTS, t.ref)
    if t.name == "guard_check":
        from chimera.handlers.router import spot

        return spot.guard_check(env, ctx, t)
    if intent is None or intent["phase"] == "DONE":
        return []
    if t.name == "maker_check" and intent["phase"] == "MAKER_WAIT":
        return _maker_check(env, ctx, intent)
    if t.name == "twap_slice" and intent["phase"] == "TWAP":
        return _twap_slice(env, ctx, intent, int(t.data["slice"]))
    return []


def kill_switch_json(mode: str, set_by: str = "test") -> str:
    return json.dumps({"mode": mode, "set_by": set_by})


__all__ = ["GuardArmed", "handle"]
