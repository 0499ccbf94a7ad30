"""Where S6 gets the price it manages on, and what it derives from it.

Two sources, both the venue's *mark* price (the price its MARK_PRICE stops and liquidations use):

* **Mark events** — S1's ``MarkPrice`` (markPrice@1s) on ``mkt:events:{perp}:<SYM>``, which S6
  consumes; every other message on that stream is skipped without a lock or an idempotency marker.
  A mark newer than the last one acted on (``pos:{mark}:<SYM>``) fans out one management pass per
  open position on the symbol (``pos:{active}:<SYM>``), carrying the mark: no REST call.
  ``positions.mark_max_age_ms`` (default 0 = off, as replays carry old exchange times) drops marks
  older than that against the worker's clock.
* **Scheduler ticks** — the pass asks the venue (``positionRisk``: one REST call per position per
  tick), which also gives the liquidation price, the leverage and the venue's position size.

Stored on the position and its ``positions_snapshots/<pos_id>:latest``: ``mark``, ``roe`` (fraction
of the margin: move × leverage), ``liq_price`` (from the last tick) and ``liq_dist`` (|mark − liq| / mark).
"""

from __future__ import annotations

import json
from decimal import Decimal

from loguru import logger

from chimera.handlers.common import dec, venue
from chimera.handlers.positions.common import direction, param
from chimera.schemas.messages import ManagePositions, MarkPrice
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import VenueError
from chimera.workers.handler import Context


def view(ctx: Context, pos: dict, tick: ManagePositions) -> dict:
    """Document fields describing the market now; {} when no price can be had (logged, pass goes on)."""
    if tick.mark_price is not None:
        return {"mark": str(tick.mark_price), "mark_ts": tick.mark_ts, "mark_source": "event"}
    try:
        rows = venue(ctx).fut.position_risk(pos["symbol"])
    except VenueError as exc:
        logger.warning("position {}: no mark from the venue ({}); managing the stop only", pos["_key"], exc)
        return {}
    row = next((r for r in rows if dec(r.get("positionAmt"))), rows[0] if rows else None)
    if row is None or not dec(row.get("markPrice")):
        return {}
    out = {"mark": str(dec(row["markPrice"])), "mark_ts": ctx.now_ms(), "mark_source": "venue",
           "venue_amt": str(dec(row.get("positionAmt")) or 0)}
    if dec(row.get("liquidationPrice")):
        out["liq_price"] = str(dec(row["liquidationPrice"]))
    if row.get("leverage"):
        out["leverage"] = int(row["leverage"])
    return out


def measures(pos: dict) -> dict:
    """ROE, price move and distance to liquidation at the position's current mark."""
    mark, entry = dec(pos.get("mark")), dec(pos.get("entry_price"))
    if not mark or not entry:
        return {}
    move = (mark - entry) / entry * direction(pos)
    out = {"move": str(move), "roe": str(move * Decimal(pos.get("leverage") or 20))}
    liq = dec(pos.get("liq_price"))
    if liq:
        out["liq_dist"] = str(abs(mark - liq) / mark)
    return out


def on_mark(ctx: Context, mp: MarkPrice) -> list[Emit]:
    if ctx.redis is None:
        return []
    max_age = param(ctx, "mark_max_age_ms", 0)
    if max_age > 0 and ctx.now_ms() - mp.ts > max_age:
        return []
    key = keys.pos_mark(mp.symbol)
    last = ctx.redis.get(key)
    if last is not None and json.loads(last)["ts"] >= mp.ts:
        return []  # repeated or older than what was already acted on
    ctx.redis.set(key, json.dumps({"mark": str(mp.mark_price), "ts": mp.ts}))
    members = sorted(m.decode() if isinstance(m, bytes) else m
                     for m in ctx.redis.smembers(keys.pos_active_symbol(mp.symbol)))
    return [Emit(keys.POS_COMMANDS, ManagePositions(symbol=mp.symbol, pos_id=pid, mark_price=mp.mark_price,
                                                    mark_ts=mp.ts), f"manage:{pid}:mark:{mp.ts}")
            for pid in members]
