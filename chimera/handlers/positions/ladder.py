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

State in ``pos:{tp}:ladder:<pos_id>``: ``done`` and ``failed`` rung numbers, ``pending`` (one rung in
flight at a time: a redelivered pass sends the same intent again, S4 answers it once).
"""

from __future__ import annotations

from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.positions.common import (
    event,
    load_state,
    market_intent,
    pairs,
    param,
    save_state,
    submit,
)
from chimera.schemas.messages import OrderResult
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context

TERMINAL = ("FILLED", "REJECTED", "CANCELED", "EXPIRED")


def rungs(ctx: Context) -> list[tuple[Decimal, Decimal]]:
    got = pairs(ctx, "tp_ladder")
    for i, (level, fraction) in enumerate(got):
        if level <= 0 or not 0 < fraction <= 1:
            raise PermanentError(f"bundle positions.tp_ladder[{i}]: level must be > 0 and fraction in (0, 1]")
    return got


def state(ctx: Context, pos_id: str) -> dict:
    return load_state(ctx, keys.pos_tp_ladder(pos_id)) or {"done": [], "failed": [], "pending": ""}


def started(ctx: Context, pos_id: str) -> bool:
    st = state(ctx, pos_id)
    return bool(st["done"] or st["pending"])


def rung_qty(pos: dict, fraction: Decimal, f: Filters) -> Decimal:
    left = Decimal(pos["qty"])
    qty = min(f.qty(Decimal(pos.get("gross_qty") or pos["qty"]) * fraction), left)
    return left if left - qty < f.min_qty else qty


def decide(ctx: Context, pos: dict, roe: Decimal, move: Decimal, f: Filters) -> list[Emit]:
    """At most one rung per pass: the lowest reached one not yet taken."""
    ladder = rungs(ctx)
    if not ladder:
        return []
    st = state(ctx, pos["_key"])
    if st["pending"]:
        return [submit(market_intent(pos, st["pending"].split(":")[-1], Decimal(st["qty"]), "TAKE_PROFIT",
                                     reduce=True))]
    metric = move if _basis(ctx) == "price" else roe
    for i, (level, fraction) in enumerate(ladder, start=1):
        if i in st["done"] or i in st["failed"] or metric < level:
            continue
        qty = rung_qty(pos, fraction, f)
        if qty <= 0:
            st["failed"].append(i)
            save_state(ctx, keys.pos_tp_ladder(pos["_key"]), st)
            continue
        intent = market_intent(pos, f"tp{i}", qty, "TAKE_PROFIT", reduce=True)
        st.update(pending=intent.intent_id, qty=str(qty))
        save_state(ctx, keys.pos_tp_ladder(pos["_key"]), st)
        return [submit(intent), event(pos, "TP_PLACED", tag=f"tp{i}")]
    return []


def _basis(ctx: Context) -> str:
    basis = param(ctx, "tp_basis", "roe")
    if basis not in ("roe", "price"):
        raise PermanentError(f"bundle positions.tp_basis={basis!r}: expected 'roe' or 'price'")
    return basis


def on_result(ctx: Context, pos_id: str, res: OrderResult) -> None:
    """A rung's order ended: taken if anything filled, else failed (not retried)."""
    if res.status not in TERMINAL:
        return
    st = state(ctx, pos_id)
    i = int(res.intent_id.rsplit(":tp", 1)[-1])
    if st["pending"] == res.intent_id:
        st["pending"] = ""
    (st["done"] if res.filled_qty > 0 or res.status == "FILLED" else st["failed"]).append(i)
    st["done"], st["failed"] = sorted(set(st["done"])), sorted(set(st["failed"]) - set(st["done"]))
    save_state(ctx, keys.pos_tp_ladder(pos_id), st)
