"""Exchange filters read from a real exchangeInfo snapshot, enforced with Binance's codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from .model import FUTURES, SPOT, ZERO, VenueError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _decimals(value: Decimal) -> int:
    exp = value.normalize().as_tuple().exponent
    return max(0, -int(exp))


@dataclass
class SymbolRules:
    market: str
    symbol: str
    base: str
    quote: str
    tick: Decimal
    min_price: Decimal
    max_price: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    notional_filter: str
    apply_min_to_market: bool
    price_precision: int
    qty_precision: int
    maint_margin_rate: Decimal
    raw: dict
    oco_allowed: bool = True
    disabled_types: frozenset[str] = frozenset()

    @classmethod
    def from_exchange_info(cls, market: str, sym: dict) -> SymbolRules:
        filters = {f["filterType"]: f for f in sym.get("filters", [])}
        price_f = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        mlot = filters.get("MARKET_LOT_SIZE", lot)
        tick = Decimal(price_f.get("tickSize", "0"))
        step = Decimal(lot.get("stepSize", "0"))
        if "NOTIONAL" in filters:
            nf, min_notional = "NOTIONAL", Decimal(filters["NOTIONAL"].get("minNotional", "0"))
            apply_market = bool(filters["NOTIONAL"].get("applyMinToMarket", True))
        elif "MIN_NOTIONAL" in filters:
            f = filters["MIN_NOTIONAL"]
            # Futures call the field "notional", spot calls it "minNotional".
            nf, min_notional = "MIN_NOTIONAL", Decimal(f.get("notional", f.get("minNotional", "0")))
            apply_market = bool(f.get("applyToMarket", True))
        else:
            nf, min_notional, apply_market = "", ZERO, False
        mstep = Decimal(mlot.get("stepSize", "0")) or step
        return cls(
            market=market,
            symbol=sym["symbol"],
            base=sym["baseAsset"],
            quote=sym["quoteAsset"],
            tick=tick,
            min_price=Decimal(price_f.get("minPrice", "0")),
            max_price=Decimal(price_f.get("maxPrice", "0")),
            step=step,
            min_qty=Decimal(lot.get("minQty", "0")),
            max_qty=Decimal(lot.get("maxQty", "0")),
            market_step=mstep,
            market_min_qty=Decimal(mlot.get("minQty", "0")),
            market_max_qty=Decimal(mlot.get("maxQty", "0")),
            min_notional=min_notional,
            notional_filter=nf,
            apply_min_to_market=apply_market,
            price_precision=int(sym.get("pricePrecision", _decimals(tick) if tick else 8)),
            qty_precision=int(sym.get("quantityPrecision", _decimals(step) if step else 8)),
            maint_margin_rate=Decimal(sym.get("maintMarginPercent", "0")) / 100,
            raw=sym,
            oco_allowed=bool(sym.get("ocoAllowed", True)),
        )

    def check_type(self, otype: str) -> None:
        """Order types switched off on the symbol (venue option), refused with Binance's -2010 messages."""
        if otype in self.disabled_types:
            raise VenueError(-2010, UNSUPPORTED_TYPE.get(otype, "Unsupported order combination"))

    def check_oco(self) -> None:
        if not self.oco_allowed:
            raise VenueError(-2010, "OCO orders are not supported for this symbol")

    # -- validation -------------------------------------------------------------------------
    def check_price(self, price: Decimal, name: str = "price") -> None:
        if price <= 0:
            raise VenueError(-4001 if self.market == FUTURES else -1013,
                             "Price less than 0." if self.market == FUTURES else "Invalid price.")
        if self.market == FUTURES:
            if _decimals(price) > self.price_precision:
                raise VenueError(-1111, "Precision is over the maximum defined for this asset.")
            if self.min_price and price < self.min_price:
                raise VenueError(-4013, "Price less than min price.")
            if self.max_price and price > self.max_price:
                raise VenueError(-4016, f"Limit price can't be higher than {self.max_price}.")
            if self.tick and price % self.tick != 0:
                raise VenueError(-4014, "Price not increased by tick size.")
        else:
            if _decimals(price) > 8:
                raise VenueError(-1111, f"Parameter '{name}' has too much precision.")
            bad = (self.min_price and price < self.min_price) or (self.max_price and price > self.max_price)
            if bad or (self.tick and price % self.tick != 0):
                raise VenueError(-1013, "Filter failure: PRICE_FILTER")

    def check_qty(self, qty: Decimal, is_market: bool) -> None:
        step = self.market_step if is_market else self.step
        min_qty = self.market_min_qty if is_market else self.min_qty
        max_qty = self.market_max_qty if is_market else self.max_qty
        if self.market == FUTURES:
            if qty <= 0:
                raise VenueError(-4003, "Quantity less than or equal to zero.")
            if _decimals(qty) > self.qty_precision:
                raise VenueError(-1111, "Precision is over the maximum defined for this asset.")
            if min_qty and qty < min_qty:
                raise VenueError(-4004, "Quantity less than min quantity.")
            if max_qty and qty > max_qty:
                raise VenueError(-4005, "Quantity greater than max quantity.")
            if step and qty % step != 0:
                raise VenueError(-4023, "Qty not increased by step size.")
        else:
            if qty <= 0:
                raise VenueError(-1013, "Invalid quantity.")
            if _decimals(qty) > 8:
                raise VenueError(-1111, "Parameter 'quantity' has too much precision.")
            name = "MARKET_LOT_SIZE" if is_market and step != self.step else "LOT_SIZE"
            bad = (min_qty and qty < min_qty) or (max_qty and qty > max_qty)
            if bad or (step and qty % step != 0):
                raise VenueError(-1013, f"Filter failure: {name}")

    def check_notional(self, notional: Decimal, is_market: bool, reduce_only: bool = False) -> None:
        if not self.min_notional or notional >= self.min_notional:
            return
        if self.market == FUTURES:
            if reduce_only:
                return
            raise VenueError(-4164, "Order's notional must be no smaller than "
                             f"{self.min_notional.normalize():f} (unless you choose reduce only).")
        if is_market and not self.apply_min_to_market:
            return
        raise VenueError(-1013, f"Filter failure: {self.notional_filter}")


UNSUPPORTED_TYPE = {
    "MARKET": "Market orders are not supported for this symbol.",
    "STOP_LOSS": "Stop loss orders are not supported for this symbol.",
    "STOP_LOSS_LIMIT": "Stop loss limit orders are not supported for this symbol.",
    "TAKE_PROFIT": "Take profit orders are not supported for this symbol.",
    "TAKE_PROFIT_LIMIT": "Take profit limit orders are not supported for this symbol.",
}


class ExchangeInfo:
    """Both markets' snapshots plus parsed rules per symbol."""

    def __init__(self, futures: dict, spot: dict, symbols: list[str] | None = None):
        keep = set(symbols) if symbols else None
        self.raw = {FUTURES: futures, SPOT: spot}
        self.rules: dict[str, dict[str, SymbolRules]] = {FUTURES: {}, SPOT: {}}
        for market, info in self.raw.items():
            info["symbols"] = [s for s in info.get("symbols", []) if keep is None or s["symbol"] in keep]
            for sym in info["symbols"]:
                self.rules[market][sym["symbol"]] = SymbolRules.from_exchange_info(market, sym)

    @classmethod
    def load(cls, futures_path: Path | None = None, spot_path: Path | None = None,
             symbols: list[str] | None = None) -> ExchangeInfo:
        fp = futures_path or DATA_DIR / "futures_exchange_info.json"
        sp = spot_path or DATA_DIR / "spot_exchange_info.json"
        return cls(json.loads(Path(fp).read_text()), json.loads(Path(sp).read_text()), symbols)

    def restrict_spot(self, *, oco_allowed: bool = True, disabled_types: tuple[str, ...] = ()) -> None:
        """Model a symbol without OCO / without some order types (e.g. no conditional orders).

        Both the served exchangeInfo (``ocoAllowed``, ``orderTypes``) and the matching engine follow it.
        """
        off = frozenset(disabled_types)
        for rules in self.rules[SPOT].values():
            rules.oco_allowed = rules.oco_allowed and oco_allowed
            rules.disabled_types = rules.disabled_types | off
            rules.raw["ocoAllowed"] = rules.oco_allowed
            rules.raw["orderTypes"] = [t for t in rules.raw.get("orderTypes", []) if t not in rules.disabled_types]

    def get(self, market: str, symbol: str) -> SymbolRules:
        rules = self.rules[market].get(symbol)
        if rules is None:
            raise VenueError(-1121, "Invalid symbol.")
        return rules
