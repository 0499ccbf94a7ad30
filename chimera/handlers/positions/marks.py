"""Where S6 gets the price it manages on, and what it derives from it; the ``MarkPrice`` route.

Two sources, both the venue's *mark* price (the price its MARK_PRICE stops and liquidations use):

* **Mark events** — S1's ``MarkPrice`` (markPrice@1s) on ``mkt:events:{perp}:<SYM>``, which S6
  consumes; every other message on that stream is skipped (no route, no lock, no marker). A mark fans
  out one management pass per open position on the symbol, carrying the mark: no REST call. The pass
  drops a mark older than the one recorded on the position (a pass that changes nothing records
  nothing: ``manage.py``).
  ``positions.mark_max_age_ms`` (default 0 = off, as replays carry old exchange times) drops marks
  older than that against the worker's clock.
* **Ticks** — the pass asks the venue (``positionRisk``: one REST call per position per tick), which
  also gives the liquidation price, the leverage and the venue's position size.

Stored on the position and its ``positions_snapshots/<pos_id>:latest``: ``mark``, ``roe`` (fraction
of the margin: move × leverage), ``liq_price`` (from the last tick) and ``liq_dist`` (|mark − liq| / mark).
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.common import dec, venue
from chimera.handlers.positions.common import Out, open_briefs, param
from chimera.schemas.documents.positions import Position, replace
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import ManagePositions, MarkPrice
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import VenueError
from chimera.workers.handler import Context


def view(ctx: Context, pos: Position, tick: ManagePositions) -> dict:
    """Position fields describing the market now; {} when no price can be had (logged, pass goes on)."""
    if tick.mark_price is not None:
        return {"mark": tick.mark_price, "mark_ts": tick.mark_ts, "mark_source": "event"}
    try:
        rows = venue(ctx, pos.account_id).fut.position_risk(pos.symbol)  # the position's own account
    except VenueError as exc:
        logger.warning("position {}: no mark from the venue ({}); managing the stop only", pos.pos_id, exc)
        return {}
    row = next((r for r in rows if dec(r.get("positionAmt"))), rows[0] if rows else None)
    if row is None or not dec(row.get("markPrice")):
        return {}
    out = {"mark": dec(row["markPrice"]), "mark_ts": ctx.now_ms(), "mark_source": "venue",
           "venue_amt": dec(row.get("positionAmt")) or Decimal(0)}
    if dec(row.get("liquidationPrice")):
        out["liq_price"] = dec(row["liquidationPrice"])
    if row.get("leverage"):
        out["leverage"] = int(row["leverage"])
    return out


def measured(pos: Position) -> Position:
    """ROE, price move and distance to liquidation at the position's current mark."""
    mark, entry = pos.mark, pos.entry_price
    if not mark or not entry:
        return pos
    move = (mark - entry) / entry * pos.direction
    liq_dist = abs(mark - pos.liq_price) / mark if pos.liq_price else pos.liq_dist
    return replace(pos, move=move, roe=move * pos.leverage, liq_dist=liq_dist)


def on_mark(env: Envelope, ctx: Context) -> Out:
    mp: MarkPrice = env.payload
    max_age = param(ctx, "mark_max_age_ms", 0)
    if max_age > 0 and ctx.now_ms() - mp.ts > max_age:
        return []
    return [Emit(keys.POS_COMMANDS, ManagePositions(symbol=mp.symbol, pos_id=p.pos_id, mark_price=mp.mark_price,
                                                    mark_ts=mp.ts), f"manage:{p.pos_id}:mark:{mp.ts}")
            for p in open_briefs(ctx, mp.symbol) if p.mark_ts < mp.ts or p.mark_source != "event"]
