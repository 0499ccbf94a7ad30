"""Add-ons: up to ``positions.max_adds`` MARKET orders, purpose ADD, as the price moves in favour.

Add ``k`` (intent ``<pos_id>:add<k>``) is due once the ROE measured from the *first* entry price
reaches ``k × positions.add_step_roe``; its size is ``positions.add_fraction`` × the first entry's
qty × the regime/health size multiplier, rounded down to the venue's step (a size multiplier of 0,
e.g. health RED, or a size below the minimum, adds nothing). Adds stop once the take-profit ladder
has started. The count in ``pos:{adds}:<pos_id>`` is taken when the add is sent: a refused add is
not retried, so ``max_adds`` bounds the orders sent. The fill itself comes back as an ADD
``OrderResult`` and grows the position (``lifecycle.grow``), which re-places the stop for the new qty.

Before it is sent, an add books its margin (qty × mark / leverage) on the position's S3 reservation
against the bundle's ``strategy.risk.fut_margin_budget_usdt`` (one Lua script, idempotent per add id, so
a redelivered pass that re-decides the same add books it once). Refused: nothing is sent, the add
counts as used, and ``add_refused`` (``BUDGET_EXHAUSTED``) is recorded in ``pos:{adds}`` and in the
snapshot ``<pos_id>:add<k>:refused``. The close's single release returns entry and adds together.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.errors import PermanentError
from chimera.handlers.positions.common import (
    direction,
    load_state,
    market_intent,
    param,
    save_state,
    snapshot,
    submit,
)
from chimera.handlers.positions.multipliers import Multipliers
from chimera.handlers.strategy.bundle import DEFAULT_BUDGET_USDT, strategy_config
from chimera.risk.state import OK, WrongSymbol, from_micro, state_for, to_micro
from chimera.schemas.messages import OrderResult
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context


def state(ctx: Context, pos_id: str) -> dict:
    return load_state(ctx, keys.pos_adds(pos_id)) or {"count": 0, "pending": "", "qty": "0"}


def roe_from_first_entry(pos: dict, mark: Decimal) -> Decimal:
    first = Decimal(pos.get("entry0") or pos["entry_price"])
    return (mark - first) / first * direction(pos) * Decimal(pos.get("leverage") or 20)


def decide(ctx: Context, pos: dict, mark: Decimal, mult: Multipliers, f: Filters) -> list[Emit]:
    max_adds = param(ctx, "max_adds", 0)
    st = state(ctx, pos["_key"])
    if st["pending"]:
        return [submit(market_intent(pos, st["pending"].split(":")[-1], Decimal(st["qty"]), "ADD", reduce=False))]
    if max_adds <= 0 or st["count"] >= max_adds or mult.size <= 0:
        return []
    step = param(ctx, "add_step_roe", Decimal("0.05"))
    fraction = param(ctx, "add_fraction", Decimal("0.5"))
    if step <= 0 or fraction <= 0:
        raise PermanentError("bundle positions.add_step_roe and positions.add_fraction must be > 0")
    k = st["count"] + 1
    if roe_from_first_entry(pos, mark) < k * step:
        return []
    qty = f.qty(Decimal(pos.get("base_qty") or pos["qty"]) * fraction * mult.size)
    if qty < f.min_qty or qty <= 0:
        return []
    intent = market_intent(pos, f"add{k}", qty, "ADD", reduce=False)
    margin = margin_of(qty, mark, pos)
    try:
        got = state_for(ctx).increase(pos["_key"], pos["symbol"], intent.intent_id, margin, budget_usdt(ctx))
    except WrongSymbol as exc:
        raise PermanentError(f"add {k} of {pos['_key']}: {exc}") from exc
    if got != OK:
        save_state(ctx, keys.pos_adds(pos["_key"]), {"count": k, "pending": "", "qty": "0", "refused": got})
        snapshot(ctx, {**pos, "add_refused": got, "add_margin": str(margin), "add_qty": str(qty)}, f"add{k}:refused")
        logger.warning("add {} of {} not sent: {} (margin {})", k, pos["_key"], got, margin)
        return []
    save_state(ctx, keys.pos_adds(pos["_key"]), {"count": k, "pending": intent.intent_id, "qty": str(qty)})
    return [submit(intent)]


def margin_of(qty: Decimal, mark: Decimal, pos: dict) -> Decimal:
    """The margin an add of ``qty`` at ``mark`` takes, in whole micro-USDT as the budget books it."""
    return from_micro(to_micro(qty * mark / Decimal(pos.get("leverage") or 20)))


def budget_usdt(ctx: Context) -> Decimal:
    """The account's margin budget: the strategy bundle's, else S3's default."""
    cfg = strategy_config(ctx.config)
    return cfg.limits.budget_usdt if cfg else Decimal(DEFAULT_BUDGET_USDT)


def on_result(ctx: Context, pos_id: str, res: OrderResult) -> None:
    st = state(ctx, pos_id)
    if st["pending"] == res.intent_id and res.status in ("FILLED", "REJECTED", "CANCELED", "EXPIRED"):
        save_state(ctx, keys.pos_adds(pos_id), {**st, "pending": ""})
