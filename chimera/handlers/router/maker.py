"""MakerThenTaker: optionally a share sent as taker at once (leg ``tn``), a post-only (GTX) order at the touch
for the rest (leg ``mk``), a wait window, then MARKET for what is left (leg ``tk``).

The window and the taker share (``plan``) come from the active bundle's fitted cost curve
(``router.curves``, B10, ``config.curves.router_params``: the predicted taker slippage for this order's
spread, size against the top-3 depth, volatility and regime), else ``router.maker_wait_ms`` and no taker
share; then the health grade (B9, ``router.health_mult``: ``{GRADE: {"wait": x, "taker_share": y}}``)
multiplies the window and floors the share. Both are recorded on the intent (``maker_wait_ms``,
``taker_share``) when the book is first read, so a redelivery keeps the plan it started with.

Phases on the intent: NEW -> MAKER (window end ``maker_deadline`` = book read + the planned wait) ->
MAKER_WAIT (resting; a ``maker_check`` timer every ``router.maker_poll_ms``, never past the deadline) ->
TAKER -> DONE. The timer is returned, not written: the runtime arms it with the entry's ack, and each
check re-arms the same timer key. A GTX refused because it would take goes to the taker at once
(``maker_reject_count``). Window over: cancel first (a fill that beats the cancel wins), then take the rest
(``maker_timeout_count``). ``maker_sent_count`` / ``maker_filled_count`` give the fill ratio; every count is
once per intent.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.config.curves import router_params
from chimera.handlers.router import toolkit as tk
from chimera.schemas.documents.orders import IntentDoc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import TimerFired
from chimera.store.collections import SIGNALS
from chimera.workers.handler import Context

S = tk.S
CHECK = tk.MAKER_CHECK
ZERO = Decimal(0)
# B9: a worse grade waits longer for the maker fill and sends more as taker at once.
DEFAULT_HEALTH = {"YELLOW": {"wait": 1.5}, "ORANGE": {"wait": 2.0, "taker_share": 0.25},
                  "RED": {"wait": 2.0, "taker_share": 0.5}}


def _book_terms(intent: IntentDoc, book: dict) -> tuple[float, float]:
    """(spread_bp, size_to_depth) of this order against the book read at send (``health.costfit.row``'s terms)."""
    mid, top = book.get("mid_at_send"), book.get("top3_at_send")
    bid, ask = book.get("best_bid"), book.get("best_ask")
    if not mid or bid is None or ask is None or top is None:
        return 0.0, 0.0
    side = top.asks if intent.side == "BUY" else top.bids
    depth = sum((Decimal(str(p)) * Decimal(str(q)) for p, q in side), ZERO)
    mid = Decimal(str(mid))
    to_depth = float(intent.qty * mid / depth) if depth > 0 else 0.0
    return float((Decimal(str(ask)) - Decimal(str(bid))) / mid * 10_000), to_depth


def _vol_bp(ctx: Context, intent: IntentDoc) -> float:
    sig = ctx.store.get(SIGNALS, intent.signal_id) if intent.signal_id else None
    atr_pct = ((sig or {}).get("features") or {}).get("atr_pct")
    return float(atr_pct) * 10_000 if isinstance(atr_pct, int | float) else 0.0


def plan(ctx: Context, intent: IntentDoc, book: dict) -> tuple[int, Decimal]:
    """(maker wait ms, taker share) for this order now: the cost curve's, then the health grade's."""
    risk = ctx.risk
    regime = ((risk.regime() if risk else None) or "NORMAL").upper()
    spread_bp, to_depth = _book_terms(intent, book)
    curves = tk.param(ctx, "curves", {})
    wait, share = router_params(curves or None, spread_bp=spread_bp, size_to_depth=to_depth,
                                vol_bp=_vol_bp(ctx, intent), regime=regime,
                                default_wait_ms=tk.param(ctx, "maker_wait_ms", 3000))
    wait_mult, share_floor = health_factors(ctx)
    share = min(max(share, share_floor), 1.0)
    return int(wait * wait_mult), Decimal(str(round(share, 6)))


def health_factors(ctx: Context) -> tuple[float, float]:
    """(wait multiplier, taker share floor) of the current health grade (``router.health_mult``, B9)."""
    risk = ctx.risk
    grade = ((risk.health() if risk else None) or "GREEN").upper()
    row = {str(k).upper(): v for k, v in tk.param(ctx, "health_mult", DEFAULT_HEALTH).items()}.get(grade) or {}
    try:
        wait_mult, share_floor = float(row.get("wait", 1)), float(row.get("taker_share", 0))
    except (TypeError, ValueError, AttributeError) as exc:
        raise PermanentError(f"bundle router.health_mult.{grade}={row!r}: expected {{wait, taker_share}} numbers") from exc
    if wait_mult <= 0 or not 0 <= share_floor <= 1:
        raise PermanentError(f"bundle router.health_mult.{grade}: wait must be > 0 and taker_share in [0, 1]")
    return wait_mult, share_floor


def run(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    if intent.phase == "NEW":
        intent = tk.set_phase(ctx, intent, "MAKER")
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


def _legs(ctx: Context, intent: IntentDoc, *names: str) -> list:
    return [d for d in (tk.load_leg(ctx, intent.intent_id, n) for n in names) if d is not None]


def _post(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    client = tk.client(ctx, intent)
    f = client.filters(intent.symbol)
    doc = tk.load_leg(ctx, intent.intent_id, "mk")
    out: tk.Out = []
    if doc is None:
        book = tk.snapshot_book(client, intent.symbol)
        touch = book.get("best_bid") if intent.side == "BUY" else book.get("best_ask")
        if touch is None:
            return _taker(env, ctx, intent, reason="no book for a maker price")
        intent = tk.note_arrival(ctx, intent, book)
        if intent.maker_deadline is None:
            wait, share = plan(ctx, intent, book)
            intent = tk.set_phase(ctx, intent, "MAKER", maker_deadline=ctx.now_ms() + wait, maker_wait_ms=wait,
                                  taker_share=share)
        now_qty = f.qty(intent.qty * (intent.taker_share or ZERO))
        if now_qty > 0 and now_qty >= f.min_qty:  # the curve says the taker is cheap enough: this much now
            intent, tn = tk.open_leg(ctx, intent, "tn", "MARKET", now_qty)
            tn = tk.place_leg(env, ctx, client, intent, tn)
            out += tk.book_fills_later(ctx, tn)
        rest = f.qty(intent.qty - tk.aggregate(_legs(ctx, intent, "tn"))[0])
        if rest <= 0 or rest < f.min_qty:
            return _taker(env, ctx, intent, reason="taker share")  # books the ``tn`` leg's fills too
        doc = tk.ensure_leg(ctx.store, tk.new_leg(
            intent, "mk", order_type="LIMIT", side=intent.side, qty=rest, now_ms=ctx.now_ms(),
            price=f.price(touch, intent.side, passive=True), tif="GTX",
            reduce_only=intent.reduce_only and intent.market == "FUT", book=book))
    doc = tk.place_leg(env, ctx, client, intent, doc)
    if doc.status in (S.REJECTED.value, S.EXPIRED.value):  # GTX would have taken: straight to taker
        tk.count(ctx, "maker_reject_count", intent.intent_id)
        return _taker(env, ctx, intent, reason=f"maker refused: {doc.reason}")
    tk.count(ctx, "maker_sent_count", intent.intent_id)  # resting (or filled): the fill ratio's base
    intent = tk.set_phase(ctx, intent, "MAKER_WAIT")
    if doc.status == S.FILLED.value:
        return _done(ctx, intent, doc) + out
    return [tk.emit_result(tk.leg_result(intent, doc)), _next_check(ctx, intent), *out]


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
    filled, avg = tk.aggregate([*_legs(ctx, intent, "tn"), doc])
    res = tk.result_for(intent, "mk", S.FILLED.value, filled=filled, avg=avg, doc=doc, reason="maker")
    return [*tk.finish(ctx, intent, res), tk.cancel_timer(CHECK, intent.intent_id), *tk.book_fills_later(ctx, doc)]


def _taker(env: Envelope, ctx: Context, intent: IntentDoc, reason: str = "") -> tk.Out:
    if intent.phase != "TAKER":
        intent = tk.set_phase(ctx, intent, "TAKER")
    client = tk.client(ctx, intent)
    f = client.filters(intent.symbol)
    done = _legs(ctx, intent, "tn", "mk")
    rest = f.qty(intent.qty - tk.aggregate(done)[0])
    if rest >= f.min_qty and rest > 0:
        intent, doc = tk.open_leg(ctx, intent, "tk", "MARKET", rest)
        doc = tk.place_leg(env, ctx, client, intent, doc)
        done.append(doc)
    filled, avg = tk.aggregate(done)
    last = done[-1] if done else None
    status = S.FILLED.value if filled >= f.qty(intent.qty) else (last.status if last else S.REJECTED.value)
    res = tk.result_for(intent, last.leg if last else "tk", status, filled=filled, avg=avg, doc=last, reason=reason)
    return [*tk.finish(ctx, intent, res), tk.cancel_timer(CHECK, intent.intent_id),
            *(e for d in done for e in tk.book_fills_later(ctx, d))]
