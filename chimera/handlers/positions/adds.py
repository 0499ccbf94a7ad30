"""Add-ons: up to ``positions.max_adds`` MARKET orders, purpose ADD, as the price moves in favour.

Add ``k`` (intent ``<pos_id>:add<k>``) is due once the ROE measured from the *first* entry price
reaches ``k × positions.add_step_roe``; its size is ``positions.add_fraction`` × the first entry's
qty × the regime/health size multiplier, rounded down to the venue's step (a size multiplier of 0,
e.g. health RED, or a size below the minimum, adds nothing). Adds stop once the take-profit ladder
has started. The count in ``pos:{adds}:<pos_id>`` is taken when the add is sent: a refused add is
not retried, so ``max_adds`` bounds the orders sent. The fill itself comes back as an ADD
``OrderResult`` and grows the position (``lifecycle.grow``), which re-places the stop for the new qty.

S3's risk budget is not extended by adds (its reservation is per position): bound them with
``max_adds`` × ``add_fraction``.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.positions.common import direction, load_state, market_intent, param, save_state, submit
from chimera.handlers.positions.multipliers import Multipliers
from chimera.schemas.messages import OrderResult
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import Filters
from chimera.workers.errors import PermanentError
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
    save_state(ctx, keys.pos_adds(pos["_key"]), {"count": k, "pending": intent.intent_id, "qty": str(qty)})
    return [submit(intent)]


def on_result(ctx: Context, pos_id: str, res: OrderResult) -> None:
    st = state(ctx, pos_id)
    if st["pending"] == res.intent_id and res.status in ("FILLED", "REJECTED", "CANCELED", "EXPIRED"):
        save_state(ctx, keys.pos_adds(pos_id), {**st, "pending": ""})
