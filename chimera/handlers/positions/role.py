"""S6 role: the position manager's route table (registry entry ``s6``).

Consumes ``ord:{results}`` (S4's outcomes), ``pos:{commands}`` (management ticks and per-position
passes), ``venue:{reports}`` (S1 user data) and the perp market streams (mark prices only: the rest of
that stream is routed to a no-op without a lock or an idempotency marker). Orders go to
S4 as ``SubmitOrder`` / ``CancelOrder`` with intent ids derived from the pos_id (``:sl<n>``,
``:tp<i>``, ``:add<k>``, ``:flatten``), so a redelivered message never produces a second order.
"""

from __future__ import annotations

from chimera.handlers.positions import manage, marks, money, reports, results, spot, tick
from chimera.handlers.positions.common import retrying
from chimera.handlers.positions.lifecycle import pos_id_of
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import (
    BookTicker,
    DepthLevels,
    FundingEvent,
    Kline,
    ManagePositions,
    MarkPrice,
    OrderResult,
    Trade,
    VenueReport,
)
from chimera.streams import keys
from chimera.workers.handler import Context, HandlerSpec, Route

TICK_LOCK = keys.lock_pos("__tick__")


def _streams(settings) -> list[str]:
    perp = [keys.mkt_stream("perp", s) for s in getattr(settings, "symbols", ()) or ()]
    return [keys.ORD_RESULTS, keys.POS_COMMANDS, keys.VENUE_REPORTS, *perp]


def _result_lock(env: Envelope) -> str:
    return keys.lock_pos(pos_id_of(env.payload))


def _manage_lock(env: Envelope) -> str:
    return keys.lock_pos(env.payload.pos_id) if env.payload.pos_id else TICK_LOCK


def _manage(env: Envelope, ctx: Context):
    return manage.run(env, ctx) if env.payload.pos_id else tick.run(env, ctx)


def _skip(env: Envelope, ctx: Context) -> list:
    return []  # the rest of the perp market stream is not S6's business


_SKIP = Route(_skip, idem=None)

ROUTES = {
    OrderResult: Route(retrying(spot.or_futures_result(results.on_result)), lock=_result_lock),
    ManagePositions: Route(retrying(_manage), lock=_manage_lock),
    # The report names no position (a store read finds it): the version compare-and-set orders it.
    VenueReport: Route(retrying(spot.or_futures_report(reports.on_report))),
    MarkPrice: Route(marks.on_mark),
    # A settled FundingEvent (S1, on pos:{commands}) goes onto the positions that held it; the perp stream's
    # next-rate events are no-ops there. Each settlement is booked once per position (no marker needed).
    FundingEvent: Route(money.on_funding_retrying, idem=None),
    **{t: _SKIP for t in (BookTicker, Trade, Kline, DepthLevels)},
}

SPEC = HandlerSpec(role="s6", streams=_streams, routes=ROUTES, on_start=tick.on_start,
                   description="S6 position manager: exchange-side stops, trailing, TP ladder, add-ons, "
                               "auto-transfer, closes, FLATTEN")
