"""MakerThenTaker: a post-only (GTX) order at the touch (leg ``mk``), a wait window, then MARKET for the rest
(leg ``tk``).

Phases on the intent: NEW -> MAKER (window end ``maker_deadline`` = now + ``router.maker_wait_ms``) ->
MAKER_WAIT (resting; a ``maker_check`` timer every ``router.maker_poll_ms``, never past the deadline) ->
TAKER -> DONE. The timer is returned, not written: the runtime arms it with the entry's ack, and each
check re-arms the same timer key. A GTX refused because it would take goes to the taker at once
(``maker_reject_count``). Window over: cancel first (a fill that beats the cancel wins), then take the rest
(``maker_timeout_count``). ``maker_sent_count`` / ``maker_filled_count`` give the fill ratio; every count is
once per intent.
"""

from __future__ import annotations

from chimera.handlers.router import toolkit as tk
from chimera.schemas.documents.orders import IntentDoc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import TimerFired
from chimera.workers.handler import Context

S = tk.S
CHECK = tk.MAKER_CHECK


def run(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    if intent.phase == "NEW":
        intent = tk.set_phase(ctx, intent, "MAKER", maker_deadline=ctx.now_ms() + tk.param(ctx, "maker_wait_ms", 3000))
    if intent.phase == "MAKER":
        return _post(env, ctx, intent)
    if intent.phase == "MAKER_WAIT":
        return _check(env, ctx, intent)
    if intent.phase == "TAKER":
        return _taker(env, ctx, intent)
    return []


def on_check(env: Envelope, ctx: Context, t: TimerFired) -> tk.Out:
    intent = tk.load_intent(ctx, t.ref)
    if intent is None or intent.phase != "MAKER_WAIT":
        return []
    return _check(env, ctx, intent)


def _post(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    client = tk.client(ctx, intent)
    f = client.filters(intent.symbol)
    doc = tk.load_leg(ctx, intent.intent_id, "mk")
    if doc is None:
        book = tk.snapshot_book(client, intent.symbol)
        touch = book.get("best_bid") if intent.side == "BUY" else book.get("best_ask")
        if touch is None:
            return _taker(env, ctx, intent, reason="no book for a maker price")
        intent = tk.note_arrival(ctx, intent, book)
        doc = tk.ensure_leg(ctx.store, tk.new_leg(
            intent, "mk", order_type="LIMIT", side=intent.side, qty=f.qty(intent.qty), now_ms=ctx.now_ms(),
            price=f.price(touch, intent.side, passive=True), tif="GTX",
            reduce_only=intent.reduce_only and intent.market == "FUT", book=book))
    doc = tk.place_leg(env, ctx, client, intent, doc)
    if doc.status in (S.REJECTED.value, S.EXPIRED.value):  # GTX would have taken: straight to taker
        tk.count(ctx, "maker_reject_count", intent.intent_id)
        return _taker(env, ctx, intent, reason=f"maker refused: {doc.reason}")
    tk.count(ctx, "maker_sent_count", intent.intent_id)  # resting (or filled): the fill ratio's base
    intent = tk.set_phase(ctx, intent, "MAKER_WAIT")
    if doc.status == S.FILLED.value:
        return _done(ctx, intent, doc)
    return [tk.emit_result(tk.leg_result(intent, doc)), _next_check(ctx, intent)]


def _next_check(ctx: Context, intent: IntentDoc):
    due = min(ctx.now_ms() + tk.param(ctx, "maker_poll_ms", 250), int(intent.maker_deadline or ctx.now_ms()))
    return tk.timer(CHECK, intent.intent_id, due)


def _check(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    client = tk.client(ctx, intent)
    doc = tk.refresh(ctx, client, tk.load_leg(ctx, intent.intent_id, "mk"))
    if doc.status == S.FILLED.value:
        return _done(ctx, intent, doc)
    if ctx.now_ms() < int(intent.maker_deadline or 0) and doc.status in (S.ACCEPTED.value, S.PARTIALLY_FILLED.value):
        return [_next_check(ctx, intent)]
    # Window over: cancel the rest first (a fill that beats the cancel wins), then take.
    doc = tk.cancel(ctx, client, doc)
    if doc.status == S.FILLED.value:
        return _done(ctx, intent, doc)
    tk.count(ctx, "maker_timeout_count", intent.intent_id)
    if doc.filled_qty:  # part filled inside the window: counts for the fill ratio too
        tk.count(ctx, "maker_filled_count", intent.intent_id)
    tk.strategy_event(ctx, "CANCEL", f"{intent.intent_id}:mk", {
        "intent_id": intent.intent_id, "client_order_id": doc.client_order_id, "reason": "maker_timeout"})
    return _taker(env, ctx, intent, reason="maker_timeout")


def _done(ctx: Context, intent: IntentDoc, doc) -> tk.Out:
    tk.count(ctx, "maker_filled_count", intent.intent_id)
    filled, avg = tk.aggregate([doc])
    res = tk.result_for(intent, "mk", S.FILLED.value, filled=filled, avg=avg, doc=doc, reason="maker")
    return [*tk.finish(ctx, intent, res), tk.cancel_timer(CHECK, intent.intent_id), *tk.book_fills_later(ctx, doc)]


def _taker(env: Envelope, ctx: Context, intent: IntentDoc, reason: str = "") -> tk.Out:
    if intent.phase != "TAKER":
        intent = tk.set_phase(ctx, intent, "TAKER")
    client = tk.client(ctx, intent)
    f = client.filters(intent.symbol)
    mk = tk.load_leg(ctx, intent.intent_id, "mk")
    done = [mk] if mk else []
    rest = f.qty(intent.qty - tk.aggregate(done)[0])
    if rest >= f.min_qty and rest > 0:
        intent, doc = tk.open_leg(ctx, intent, "tk", "MARKET", rest)
        doc = tk.place_leg(env, ctx, client, intent, doc)
        done.append(doc)
    filled, avg = tk.aggregate(done)
    last = done[-1] if done else None
    status = S.FILLED.value if filled >= f.qty(intent.qty) else (last.status if last else S.REJECTED.value)
    res = tk.result_for(intent, "tk" if len(done) > 1 or not mk else "mk", status, filled=filled, avg=avg, doc=last,
                        reason=reason)
    return [*tk.finish(ctx, intent, res), tk.cancel_timer(CHECK, intent.intent_id),
            *(e for d in done for e in tk.book_fills_later(ctx, d))]
