"""Domain types shared by the engine and the protocol layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

ZERO = Decimal(0)
SPOT = "spot"
FUTURES = "futures"


class VenueError(Exception):
    """A Binance-style rejection: the protocol layer maps it to {code, msg} with this HTTP status."""

    def __init__(self, code: int, msg: str, http_status: int = 400):
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


def D(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # str() keeps the shortest repr, avoiding binary-float artefacts in money values.
        return Decimal(str(value))
    return Decimal(value)


def q8(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)


def fmt(value: Decimal | None, places: int | None = None) -> str:
    if value is None:
        return "0"
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = format(value, "f")
    return text


@dataclass
class Order:
    market: str
    account: str
    symbol: str
    order_id: int
    client_id: str
    side: str
    type: str
    orig_qty: Decimal
    price: Decimal = ZERO
    stop_price: Decimal = ZERO
    time_in_force: str = "GTC"
    reduce_only: bool = False
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    time: int = 0
    update_time: int = 0
    orig_type: str = ""
    triggered: bool = False
    list_id: int = -1
    # Margin (futures) or balance (spot) held for the unfilled part, released on cancel/fill.
    reserved: Decimal = ZERO
    reserved_asset: str = ""

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def avg_price(self) -> Decimal:
        if self.executed_qty == 0:
            return ZERO
        return self.cum_quote / self.executed_qty

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_stop(self) -> bool:
        return self.type in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT",
                             "STOP_LOSS", "TAKE_PROFIT") and not self.triggered


@dataclass
class Position:
    symbol: str
    amt: Decimal = ZERO
    entry_price: Decimal = ZERO
    leverage: int = 20
    margin_type: str = "ISOLATED"
    isolated_margin: Decimal = ZERO
    update_time: int = 0


@dataclass
class Account:
    name: str
    api_key: str
    api_secret: str
    spot: dict[str, list[Decimal]] = field(default_factory=dict)  # asset -> [free, locked]
    futures_wallet: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)

    def spot_free(self, asset: str) -> Decimal:
        return self.spot.get(asset, [ZERO, ZERO])[0]

    def spot_add(self, asset: str, free: Decimal = ZERO, locked: Decimal = ZERO) -> None:
        row = self.spot.setdefault(asset, [ZERO, ZERO])
        row[0] += free
        row[1] += locked

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = Position(symbol=symbol, leverage=self.leverage.get(symbol, 20))
            self.positions[symbol] = pos
        return pos


@dataclass
class Trade:
    market: str
    account: str
    symbol: str
    trade_id: int
    order_id: int
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    time: int
    order_list_id: int = -1


@dataclass
class Income:
    account: str
    symbol: str
    income_type: str
    income: Decimal
    asset: str
    time: int
    tran_id: int
    trade_id: str = ""
    info: str = ""


@dataclass
class Event:
    """A domain event for one account; `kind` is order | account | list | margin_call."""

    kind: str
    market: str
    account: str
    time: int
    order: Order | None = None
    exec_type: str = ""
    trade: Trade | None = None
    reason: str = ""
    balances: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
