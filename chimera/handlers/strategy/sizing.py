"""Entry sizing and the order intent: Decimal money, rounded by the exchange's filters.

Filters come from the exchangeInfo snapshots shipped with the local venue (read through its
``SymbolRules`` parser, read-only) so S3 rounds exactly like the venue validates.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from chimera.handlers.strategy.bundle import Sizing
from chimera.schemas.messages import OrderIntent
from chimera.venues.local.engine.rules import ExchangeInfo, SymbolRules

_MARKETS = {"FUT": "futures", "SPOT": "spot"}


@functools.cache
def _info() -> ExchangeInfo:
    return ExchangeInfo.load()


def symbol_rules(market: str, symbol: str) -> SymbolRules | None:
    try:
        return _info().rules[_MARKETS[market]].get(symbol)
    except KeyError:
        return None


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step if step > 0 else value


def round_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_HALF_EVEN) * step if step > 0 else value


def ids_for(signal_id: str) -> tuple[str, str]:
    """(pos_id, intent_id), derived from the signal so a replay produces the same ids."""
    h = hashlib.sha1(signal_id.encode()).hexdigest()
    return f"pos-{h[:24]}", f"ent-{hashlib.sha1(f'{signal_id}:entry'.encode()).hexdigest()[:28]}"


def entry_price(features: dict) -> tuple[Decimal | None, str]:
    """The price to size at and where it came from.

    S2's bar-only snapshots have no ``mid`` (no book on the replayed data); ``atr / atr_pct``
    is exactly the last close by definition of atr_pct, so it stands in for it.
    """
    for name in ("mid", "close", "last_price"):
        v = features.get(name)
        if isinstance(v, int | float) and v > 0:
            return Decimal(repr(float(v))), name
    atr, pct = features.get("atr"), features.get("atr_pct")
    if isinstance(atr, int | float) and isinstance(pct, int | float) and atr > 0 and pct > 0:
        return Decimal(repr(atr / pct)), "atr/atr_pct"
    return None, ""


@dataclass(frozen=True)
class Sized:
    qty: Decimal
    margin: Decimal
    price: Decimal
    tp: Decimal | None
    sl: Decimal | None


def size_entry(sizing: Sizing, rules: SymbolRules, *, price: Decimal, size_mult: float, side: str,
               atr: float | None, tp_mult: float, sl_mult: float) -> Sized | str:
    """The sized entry, or the reason it cannot be placed (MIN_QTY / MIN_NOTIONAL)."""
    price = round_to(price, rules.tick)  # a derived reference price carries float noise
    margin = (sizing.margin_usdt * Decimal(repr(size_mult))).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    leverage = sizing.leverage if sizing.market == "FUT" else 1
    step = rules.market_step if sizing.exec_policy == "MARKET" else rules.step
    qty = floor_to(margin * leverage / price, step)
    if qty <= 0 or qty < rules.min_qty:
        return "MIN_QTY"
    if qty * price < rules.min_notional:
        return "MIN_NOTIONAL"
    tp = sl = None
    if atr and atr > 0:
        a = Decimal(repr(atr))
        sign = 1 if side == "BUY" else -1
        tp = round_to(price + sign * a * Decimal(repr(sizing.tp_atr * tp_mult)), rules.tick)
        sl = round_to(price - sign * a * Decimal(repr(sizing.sl_atr * sl_mult)), rules.tick)
        if sl <= 0:
            sl = None
    # Book the margin actually used (qty rounded down), so the budget matches the exposure.
    used = (qty * price / leverage).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    return Sized(qty=qty, margin=used, price=price, tp=tp, sl=sl)


def build_intent(*, intent_id: str, pos_id: str, signal_id: str, symbol: str, side: str, sizing: Sizing,
                 sized: Sized, bundle_id: str = "", config_rev: int = 0, account_id: str = "") -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id, market=sizing.market, symbol=symbol, side=side, qty=sized.qty,
        exec_policy=sizing.exec_policy, purpose="ENTRY", tp_price=sized.tp, sl_price=sized.sl,
        leverage=sizing.leverage if sizing.market == "FUT" else 1, margin_usdt=sized.margin,
        signal_id=signal_id, pos_id=pos_id, bundle_id=bundle_id, config_rev=config_rev, account_id=account_id,
    )
