"""TWAP: ``router.twap_slices`` (4) MARKET slices, ``router.twap_interval_ms`` (1000) apart, times the health
grade's wait multiplier (``router.health_mult``, B9: a degraded system spreads its taker flow out more).

The plan (slice sizes and due times) is fixed once in the intent document (``twap_plan``); each slice is
a ``twap_slice`` timer the runtime arms with the command's ack, and its own idempotent leg ``tw<i>``, so
the leg's status is the slice's state: a restarted router resumes where it stopped and a slice already
sent is never sent again. A repeated command while the TWAP runs re-arms the slices not sent yet (same
timer keys: it replaces, never doubles). The intent ends when every slice's leg has ended.
"""

from __future__ import annotations

from chimera.handlers.router import toolkit as tk
from chimera.handlers.router.maker import health_factors
from chimera.schemas.documents.orders import IntentDoc, TwapSlice
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import TimerFired
from chimera.workers.handler import Context

S = tk.S
SLICE = tk.TWAP_SLICE


def run(env: Envelope, ctx: Context, intent: IntentDoc) -> tk.Out:
    if intent.phase == "NEW":
        f = tk.client(ctx, intent).filters(intent.symbol)
        n = max(1, tk.param(ctx, "twap_slices", 4))
        interval = int(tk.param(ctx, "twap_interval_ms", 1000) * health_factors(ctx)[0])
        total = f.qty(intent.qty)
        base = f.qty(total / n)
        sizes = [base] * (n - 1) + [total - base * (n - 1)]
        t0 = ctx.now_ms()
        plan = [TwapSlice(i=i, qty=q, due=t0 + i * interval) for i, q in enumerate(sizes) if q > 0]
        intent = tk.set_phase(ctx, intent, "TWAP", twap_plan=plan)
    if intent.phase != "TWAP":
        return []
    return [_arm(intent, s) for s in intent.twap_plan
            if (leg := tk.load_leg(ctx, intent.intent_id, f"tw{s.i}")) is None or not tk.is_terminal(leg)]


def _arm(intent: IntentDoc, s: TwapSlice):
    return tk.timer(SLICE, intent.intent_id, s.due, part=str(s.i))


def on_slice(env: Envelope, ctx: Context, t: TimerFired) -> tk.Out:
    intent = tk.load_intent(ctx, t.ref)
    if intent is None or intent.phase != "TWAP":
        return []
    i = int(t.data["part"])
    plan = {s.i: s for s in intent.twap_plan}
    client = tk.client(ctx, intent)
    intent, doc = tk.open_leg(ctx, intent, f"tw{i}", "MARKET", plan[i].qty)
    doc = tk.place_leg(env, ctx, client, intent, doc)
    fills = tk.book_fills_later(ctx, doc)
    docs = [tk.load_leg(ctx, intent.intent_id, f"tw{j}") for j in plan]
    if all(d is not None and tk.is_terminal(d) for d in docs):
        filled, avg = tk.aggregate(docs)
        status = S.FILLED.value if filled >= sum(s.qty for s in plan.values()) else docs[-1].status
        return [*tk.finish(ctx, intent, tk.result_for(intent, "twap", status, filled=filled, avg=avg, doc=docs[-1])),
                *fills]
    return [tk.emit_result(tk.leg_result(intent, doc)), *fills]
