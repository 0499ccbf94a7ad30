"""S4 role: the order router's route table (registry entry ``s4``).

Commands and timers lock their intent (its legs' compare-and-set writes and venue calls never
interleave); a venue report locks its order, since the intent is only known after a store read (it
races the intent's own handling through the compare-and-set on the order's status). Commands and
timers have no done-marker on purpose: a repeated command must re-emit the stored result (the
runtime's marker would swallow it) and each handler is idempotent by intent id. Venue reports carry
S1's per-trade/per-execution key.
"""

from __future__ import annotations

from chimera.errors import PermanentError
from chimera.handlers.router import cancel, maker, reports, spot, submit, twap
from chimera.handlers.router import toolkit as tk
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import CancelOrder, SubmitOrder, TimerFired, VenueReport
from chimera.streams import keys
from chimera.workers.handler import Context, HandlerSpec, Route

TIMERS = {
    tk.MAKER_CHECK: maker.on_check,
    tk.TWAP_SLICE: twap.on_slice,
    tk.GUARD_CHECK: spot.guard_check,
    tk.BOOK_FILLS: reports.on_book_fills,
}


def on_timer(env: Envelope, ctx: Context) -> tk.Out:
    t = env.payload
    handler = TIMERS.get(t.name)
    if handler is None:
        raise PermanentError(f"s4 has no timer named {t.name!r}")
    return handler(env, ctx, t)


def _streams(_settings) -> list[str]:
    return [keys.ORD_COMMANDS, keys.ROUTER_TIMERS, keys.VENUE_REPORTS]


ROUTES = {
    SubmitOrder: Route(submit.on_submit, lock=lambda env: keys.lock_intent(env.payload.intent.intent_id), idem=None),
    CancelOrder: Route(cancel.on_cancel, lock=lambda env: keys.lock_intent(env.payload.intent_id), idem=None),
    TimerFired: Route(on_timer, lock=lambda env: keys.lock_intent(env.payload.ref), idem=None),
    VenueReport: Route(reports.on_report, lock=lambda env: keys.lock_order(env.payload.client_order_id)),
}

SPEC = HandlerSpec(role="s4", streams=_streams, routes=ROUTES, commit_each=True,
                   description="S4 order router: SubmitOrder/CancelOrder/timers -> venue orders, ord:{results}; "
                               "venue:{reports} -> orders/fills")
