"""Add-ons: up to ``positions.max_adds`` MARKET orders, purpose ADD, as the price moves in favour.

Add ``k`` (intent ``<pos_id>:add<k>``) is due once the ROE measured from the *first* entry price
reaches ``k × positions.add_step_roe``; its size is ``positions.add_fraction`` × the first entry's
qty × the regime/health size multiplier, rounded down to the venue's step (a size multiplier of 0,
e.g. health RED, or a size below the minimum, adds nothing). Adds stop once the take-profit ladder
has started. ``Position.adds.count`` is taken when the add is sent: a refused add is not retried, so
``max_adds`` bounds the orders sent. The fill itself comes back as an ADD ``OrderResult`` and grows the
position (``lifecycle.grow``), which re-places the stop for the new qty.

Before it is sent, an add books its margin (qty × mark / leverage) on the position's S3 reservation
against the bundle's ``strategy.risk.fut_margin_budget_usdt`` (the risk port, idempotent per add id, so
a redelivered pass that re-decides the same add books it once). Refused: nothing is sent, the add
counts as used, and ``adds.refused`` (``BUDGET_EXHAUSTED``) is recorded on the position and in the
snapshot ``<pos_id>:add<k>:refused``. The close's single release returns entry and adds together.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.errors import PermanentError
from chimera.handlers.positions.common import Out, market_intent, param, risk, snapshot, submit
from chimera.handlers.positions.multipliers import Multipliers
from chimera.handlers.strategy.bundle import DEFAULT_BUDGET_USDT, strategy_config
from chimera.risk.state import OK, WrongSymbol, from_micro, to_micro
from chimera.schemas.documents.positions import Position, replace
from chimera.schemas.messages import OrderResult
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context

ENDED = ("FILLED", "REJECTED", "CANCELED", "EXPIRED")


def roe_from_first_entry(pos: Position, mark: Decimal) -> Decimal:
    first = pos.entry0 or pos.entry_price
    return (mark - first) / first * pos.direction * pos.leverage


def decide(ctx: Context, pos: Position, mark: Decimal, mult: Multipliers, f: Filters) -> tuple[Position, Out]:
    max_adds = param(ctx, "max_adds", 0)
    st = pos.adds
    if st.pending:
        return pos, [submit(market_intent(pos, st.pending.rsplit(":", 1)[-1], st.pending_qty, "ADD", reduce=False))]
    if max_adds <= 0 or st.count >= max_adds or mult.size <= 0:
        return pos, []
    step = param(ctx, "add_step_roe", Decimal("0.05"))
    fraction = param(ctx, "add_fraction", Decimal("0.5"))
    if step <= 0 or fraction <= 0:
        raise PermanentError("bundle positions.add_step_roe and positions.add_fraction must be > 0")
    k = st.count + 1
    if roe_from_first_entry(pos, mark) < k * step:
        return pos, []
    qty = f.qty((pos.base_qty or pos.qty) * fraction * mult.size)
    if qty < f.min_qty or qty <= 0:
        return pos, []
    intent = market_intent(pos, f"add{k}", qty, "ADD", reduce=False)
    margin = margin_of(qty, mark, pos)
    try:
        got = risk(ctx).increase(pos.pos_id, pos.symbol, intent.intent_id, margin, budget_usdt(ctx),
                                 account_id=pos.account_id)
    except WrongSymbol as exc:
        raise PermanentError(f"add {k} of {pos.pos_id}: {exc}") from exc
    if got != OK:
        pos = replace(pos, adds=replace(st, count=k, pending="", pending_qty=Decimal(0), refused=got))
        # The snapshot records the refusal even if this pass is re-run: same key, same content.
        snapshot(ctx, pos, f"add{k}:refused", add_qty=str(qty), add_margin=str(margin))
        logger.warning("add {} of {} not sent: {} (margin {} for {})", k, pos.pos_id, got, margin, qty)
        return pos, []
    return replace(pos, adds=replace(st, count=k, pending=intent.intent_id, pending_qty=qty)), [submit(intent)]


def margin_of(qty: Decimal, mark: Decimal, pos: Position) -> Decimal:
    """The margin an add of ``qty`` at ``mark`` takes, in whole micro-USDT as the budget books it."""
    return from_micro(to_micro(qty * mark / pos.leverage))


def budget_usdt(ctx: Context) -> Decimal:
    """The account's margin budget: the strategy bundle's, else S3's default."""
    cfg = strategy_config(ctx.config)
    return cfg.limits.budget_usdt if cfg else Decimal(DEFAULT_BUDGET_USDT)


def on_result(pos: Position, res: OrderResult) -> Position:
    """The add in flight ended (filled or not): the next one may be decided."""
    if pos.adds.pending == res.intent_id and res.status in ENDED:
        return replace(pos, adds=replace(pos.adds, pending="", pending_qty=Decimal(0)))
    return pos
