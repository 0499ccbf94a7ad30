"""Staged take-profit: ``positions.tp_ladder: [[level, fraction], ...]``.

``level`` is an ROE (``positions.tp_basis: "roe"``, default) or a price move from the average entry
(``"price"``), both fractions (0.01 = 1 %). When the mark reaches a rung, S6 sends a reduce-only
MARKET order, purpose TAKE_PROFIT, intent ``<pos_id>:tp<i>``, for ``fraction`` × the qty entered
(entry + adds), capped at what is left; a remainder below the venue's minimum goes with it.

Why MARKET at the level and not resting TAKE_PROFIT orders: the spec's S6 takes profit with
reduce-only market orders, the size of every rung follows the position as it is *then* (after
adds), and the remaining qty is protected by the exchange-side stop, which is resized after every
partial fill (``lifecycle.reduce`` → ``stops.reconcile``). The price is the mark S6 sees, so a rung
fires on the next management pass after the level is crossed (tick or mark event).

Progress is ``Position.tp``: ``done`` and ``failed`` rung numbers, ``pending`` (one rung in flight at a
time: a redelivered pass sends the same intent again, S4 answers it once).
"""

from __future__ import annotations

from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.positions.common import Out, event, market_intent, pairs, param, submit
from chimera.schemas.documents.positions import Position, replace
from chimera.schemas.messages import OrderResult
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context

TERMINAL = ("FILLED", "REJECTED", "CANCELED", "EXPIRED")


def rungs(ctx: Context) -> list[tuple[Decimal, Decimal]]:
    got = pairs(ctx, "tp_ladder")
    for i, (level, fraction) in enumerate(got):
        if level <= 0 or not 0 < fraction <= 1:
            raise PermanentError(f"bundle positions.tp_ladder[{i}]: level must be > 0 and fraction in (0, 1]")
    return got


def rung_qty(pos: Position, fraction: Decimal, f: Filters) -> Decimal:
    left = pos.qty
    qty = min(f.qty((pos.gross_qty or pos.qty) * fraction), left)
    return left if left - qty < f.min_qty else qty


def decide(ctx: Context, pos: Position, roe: Decimal, move: Decimal, f: Filters) -> tuple[Position, Out]:
    """At most one rung per pass: the lowest reached one not yet taken."""
    ladder = rungs(ctx)
    if not ladder:
        return pos, []
    tp = pos.tp
    if tp.pending:
        suffix = tp.pending.rsplit(":", 1)[-1]
        return pos, [submit(market_intent(pos, suffix, tp.pending_qty, "TAKE_PROFIT", reduce=True))]
    metric = move if _basis(ctx) == "price" else roe
    for i, (level, fraction) in enumerate(ladder, start=1):
        if i in tp.done or i in tp.failed or metric < level:
            continue
        qty = rung_qty(pos, fraction, f)
        if qty <= 0:
            tp = replace(tp, failed=(*tp.failed, i))
            continue
        intent = market_intent(pos, f"tp{i}", qty, "TAKE_PROFIT", reduce=True)
        pos = replace(pos, tp=replace(tp, pending=intent.intent_id, pending_qty=qty))
        return pos, [submit(intent), event(pos, "TP_PLACED", tag=f"tp{i}")]
    return replace(pos, tp=tp), []


def _basis(ctx: Context) -> str:
    basis = param(ctx, "tp_basis", "roe")
    if basis not in ("roe", "price"):
        raise PermanentError(f"bundle positions.tp_basis={basis!r}: expected 'roe' or 'price'")
    return basis


def on_result(pos: Position, res: OrderResult) -> Position:
    """A rung's order ended: taken if anything filled, else failed (not retried)."""
    rung = res.intent_id.rsplit(":tp", 1)[-1] if ":tp" in res.intent_id else ""
    if res.status not in TERMINAL or not rung.isdigit():  # not a rung (e.g. the resting take-profit)
        return pos
    i = int(rung)
    tp = pos.tp
    pending = "" if tp.pending == res.intent_id else tp.pending
    done, failed = set(tp.done), set(tp.failed)
    (done if res.filled_qty > 0 or res.status == "FILLED" else failed).add(i)
    return replace(pos, tp=replace(tp, pending=pending, pending_qty=tp.pending_qty if pending else Decimal(0),
                                   done=tuple(sorted(done)), failed=tuple(sorted(failed - done))))
