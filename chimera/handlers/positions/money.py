"""A position's money, from the venue's own figures (complete accounting, issue 12 item 5).

* **Trades.** Every venue trade of one of the position's orders (entry, add, stop, take-profit, exit)
  adds the venue's commission to ``fees`` and the venue's realized PnL to ``realized_pnl``; S1 reports it
  on ``venue:{reports}`` (``ORDER_TRADE_UPDATE``: ``n`` commission, ``rp`` realized). The venue's figures,
  not S6's arithmetic: the venue rounds each trade's PnL to 8 dp and averages entries its own way, and the
  books must match it to 1e-8 USDT. A report can arrive after the result that closed the position, so
  money is booked on a closed position too (it is not a state transition).
* **Funding.** S1 turns each ``FUNDING_FEE`` income row into a settled ``FundingEvent`` on
  ``pos:{commands}`` (the backtest runner does the same from the engine's income rows). The amount goes to
  the positions of that account and symbol that held something at the settlement (by their fills' venue
  times): pro rata by quantity when several did (the last takes the remainder, so the parts add up
  exactly).

Liquidation and ADL trades are the venue's own orders: ``positions.forced`` books them when it claims the
force order. Each trade / income row is counted once per position (``booked_trades`` / ``booked_funding``),
so a redelivered report or settlement changes nothing.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.positions.common import OPEN_STATES, Out, from_doc, retrying
from chimera.handlers.positions.lifecycle import write
from chimera.schemas.documents.positions import Position, replace
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import FundingEvent, VenueReport
from chimera.store.collections import FILLS, POSITIONS
from chimera.workers.handler import Context

ZERO = Decimal(0)
QUOTE_ASSETS = ("USDT", "")  # a fee in another asset (BNB) does not move the USDT wallet
RECENT_CLOSED = 20  # closed positions looked at for a settlement (it is booked within moments of happening)


def trade_key(rep: VenueReport) -> str:
    return f"{rep.symbol}:{rep.trade_id}"


def book_trade(pos: Position, rep: VenueReport) -> Position:
    """``pos`` with this venue trade's commission and realized PnL, unless it already carries them."""
    if rep.exec_type != "TRADE" or not rep.trade_id or rep.last_qty <= 0 or pos.market != "FUT":
        return pos
    key = trade_key(rep)
    if key in pos.booked_trades:
        return pos
    fee = rep.commission if rep.commission_asset in QUOTE_ASSETS else ZERO
    return replace(pos, fees=pos.fees + fee, realized_pnl=pos.realized_pnl + rep.realized_pnl,
                   booked_trades=(*pos.booked_trades, key))


def open_at(ctx: Context, account_id: str, symbol: str, t: int) -> list[Position]:
    """The account's futures positions on ``symbol`` that held something at venue time ``t``, oldest first.

    Held = its first fill at or before ``t`` and, once closed, its last fill at or after it: the fills'
    times are the venue's, like the settlement's (a worker's clock may be another one, e.g. in a paper
    replay). A position without fills yet counts from its creation. When none qualifies, the ones open now.
    """
    live = [from_doc(d) for d in ctx.store.query(POSITIONS, {"symbol": symbol, "state": ("in", OPEN_STATES)},
                                                   order_by="created_at")]
    ended = [from_doc(d) for d in ctx.store.query(POSITIONS, {"symbol": symbol, "state": "CLOSED"},
                                                    order_by="closed_at", desc=True, limit=RECENT_CLOSED)]
    mine = [p for p in (*reversed(ended), *live) if p.market == "FUT" and (p.account_id or "main") == account_id]
    held = [p for p in mine if _held(ctx, p, t)]
    return held or [p for p in live if p in mine and p.qty > 0]


def _held(ctx: Context, pos: Position, t: int) -> bool:
    times = sorted(int(f.get("ts") or 0) for f in ctx.store.query(FILLS, {"pos_id": pos.pos_id}))
    first = times[0] if times else pos.created_at
    if first > t:
        return False
    return pos.is_open or (bool(times) and times[-1] >= t)


def split(amount: Decimal, positions: list[Position]) -> list[Decimal]:
    """``amount`` pro rata by quantity (equal parts without quantities); the last part takes the remainder."""
    total = sum((p.qty for p in positions), ZERO)
    parts = [(amount * p.qty / total).quantize(Decimal("0.00000001")) if total else
             (amount / len(positions)).quantize(Decimal("0.00000001")) for p in positions[:-1]]
    return [*parts, amount - sum(parts, ZERO)]


def on_funding(env: Envelope, ctx: Context) -> Out:
    """A settled funding payment of the envelope's account: onto the positions it was paid for."""
    ev: FundingEvent = env.payload
    if not ev.settled or ev.amount_usdt is None:
        return []  # the market's next funding rate (perp stream): nothing to book
    account = env.account_id or "main"
    key = f"{account}:{ev.tran_id or ev.funding_time}"
    positions = open_at(ctx, account, ev.symbol, ev.funding_time)
    if not positions:
        logger.warning("funding {} {} USDT on {} ({}): no position of {} held it; left unallocated",
                       key, ev.amount_usdt, ev.symbol, ev.funding_time, account)
        return []
    for pos, part in zip(positions, split(ev.amount_usdt, positions), strict=True):
        if key not in pos.booked_funding:
            write(ctx, pos, replace(pos, funding=pos.funding + part, booked_funding=(*pos.booked_funding, key)))
    return []


on_funding_retrying = retrying(on_funding)
