"""``positions/<pos_id>``: the one record of a position, owned by S6 (ARCHITECTURE §1).

Everything S6 knows about a position lives here: its size and average entry, the lifecycle state
(``POSITION_FSM`` in ``schemas/states.py``), the exchange-side stop it should have and the one it
has, the take-profit ladder and add-on progress, and its money (realized PnL, fees, funding).
Writers compare-and-set on ``version`` (``store.update_if``), so two deliveries that read the same
version cannot both write. S3 reads it (cooldown, same-direction guard) and S5 repairs it through
S6's own functions; nobody else writes it.

Evolution (msgspec rules): every field has a default, a field's type never changes. A document
written before a field existed decodes with the default; an unknown stored field is ignored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from chimera.schemas.states import PositionStatus

ZERO = Decimal(0)
Side = Literal["BUY", "SELL"]
OPEN = (PositionStatus.ACTIVE, PositionStatus.PENDING_CLOSING)


class _Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    pass


class StopStep(_Doc, frozen=True):
    """One stop order S6 asked S4 for: level ``n``, intent ``<pos_id>:sl<n>``."""

    n: int
    intent_id: str
    price: Decimal
    qty: Decimal
    at: int = 0  # when it was asked for (clock ms)


class StopRefusal(_Doc, frozen=True):
    """The last stop the venue refused: the same one is not asked again before ``positions.sl_retry_ms``."""

    price: Decimal
    qty: Decimal
    at: int
    reason: str = ""


class Stop(_Doc, frozen=True):
    """The exchange-side stop. ``level``/``intent_id``/``client_order_id``/``price``/``qty`` describe the one
    armed at the venue; ``pending`` the next one in flight (at most one); ``retired`` the replaced ones whose
    cancel is not confirmed yet. New before old: a pending stop replaces the armed one only once S4 says
    it is ACCEPTED."""

    level: int = 0
    intent_id: str = ""
    client_order_id: str = ""
    price: Decimal | None = None
    qty: Decimal | None = None
    n: int = 0  # highest level number handed out
    pending: StopStep | None = None
    retired: tuple[str, ...] = ()
    refused: StopRefusal | None = None

    def live_intents(self) -> list[str]:
        """Every stop intent that may still rest at the venue."""
        out = [self.intent_id] if self.intent_id else []
        if self.pending is not None:
            out.append(self.pending.intent_id)
        return out + [i for i in self.retired if i not in out]


class TakeProfitOrder(_Doc, frozen=True):
    """The futures take-profit resting at the venue (TAKE_PROFIT_MARKET, reduce-only, MARK_PRICE) when the
    entry's intent has a ``tp_price``: ``<pos_id>:tpo``. ``status``: PENDING (asked S4), ARMED (ACCEPTED),
    REFUSED (with ``reason``). Whichever of it and the stop fills first, the close cancels the other."""

    intent_id: str = ""
    client_order_id: str = ""
    price: Decimal | None = None
    qty: Decimal = ZERO
    status: str = ""
    reason: str = ""


class TakeProfitLadder(_Doc, frozen=True):
    """Rungs taken (``done``), refused or empty (``failed``), and the one in flight (``pending`` intent)."""

    done: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    pending: str = ""
    pending_qty: Decimal = ZERO

    @property
    def started(self) -> bool:
        return bool(self.done or self.pending)


class AddOns(_Doc, frozen=True):
    """Adds sent (``count``, counted when sent), the one in flight, and the last budget refusal."""

    count: int = 0
    pending: str = ""
    pending_qty: Decimal = ZERO
    refused: str = ""


class Position(_Doc, frozen=True):
    pos_id: str = ""
    symbol: str = ""
    side: Side = "BUY"
    market: str = "FUT"
    account_id: str = "main"
    state: PositionStatus = PositionStatus.PENDING_ENTRY
    version: int = 0  # 0: a document from before versions (or written by hand); compare on absence
    # size and price
    qty: Decimal = ZERO
    entry_price: Decimal | None = None
    entry0: Decimal | None = None  # first entry's average price (add-on steps are measured from it)
    base_qty: Decimal = ZERO  # first entry's qty (add sizes)
    gross_qty: Decimal = ZERO  # everything entered, adds included (TP rung sizes)
    leverage: int = 20
    entry_intent_id: str = ""
    signal_id: str = ""
    bundle_id: str = ""  # the bundle and rev that decided the entry (from its intent), for attribution
    config_rev: int = 0
    # fills counted once: entries/adds per intent (cum qty, cum notional), reductions per client order id
    fills_in: dict[str, tuple[Decimal, Decimal]] = {}
    fills_out: dict[str, Decimal] = {}
    # protection and management
    sl_price: Decimal | None = None  # the stop the position should have (the armed one is stop.price)
    tp_price: Decimal | None = None  # the take-profit it should have (futures: ``take_profit``)
    reference_price: Decimal | None = None  # the decision's price the intent's distances were measured from
    trail_step: int = 0
    stop: Stop = Stop()
    take_profit: TakeProfitOrder = TakeProfitOrder()
    tp: TakeProfitLadder = TakeProfitLadder()
    adds: AddOns = AddOns()
    # the market at the last pass
    mark: Decimal | None = None
    mark_ts: int = 0
    mark_source: str = ""
    move: Decimal | None = None
    roe: Decimal | None = None
    liq_price: Decimal | None = None
    liq_dist: Decimal | None = None
    venue_amt: Decimal | None = None
    regime: str = ""
    health: str = ""
    managed_at: int = 0
    last_pass: str = ""
    flat_since: int = 0  # since when |ROE| has stayed inside the stagnation band (0: it is outside)
    stagnated_at: int = 0  # when STAGNATED was published (once per position)
    # money
    realized_pnl: Decimal = ZERO  # the venue's, booked per trade (positions.money)
    est_realized_pnl: Decimal = ZERO  # S6's own estimate from its fills (on REDUCED/EXIT: known at once)
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    # venue trades (``<symbol>:<trade id>``) and funding settlements (``<account>:<tranId>``) whose figures are
    # in realized_pnl / fees / funding: each counted once however often it is delivered (positions.money)
    booked_trades: tuple[str, ...] = ()
    booked_funding: tuple[str, ...] = ()
    # SPOT (positions/spot.py): the venue orders protecting it and its money in the quote asset, where
    # realized_pnl is net of every fee (quote received - quote paid) and fees values base-asset fees at
    # their trade's price
    quote_asset: str = ""
    protection: str = ""  # OCO, STOP (stop-loss-limit, maybe a separate take-profit), GUARD (S4's local stop)
    protection_orders: tuple[str, ...] = ()  # client order ids of those venue orders
    entry_cost: Decimal = ZERO  # quote paid for what it holds
    exit_proceeds: Decimal = ZERO  # quote received from its exits, before their fees
    # the end
    exit_price: Decimal | None = None
    exit_intent_id: str = ""
    closed_by: str = ""
    close_reason: str = ""  # STOP_LOSS, TAKE_PROFIT, EXIT, FLATTEN, LIQUIDATED, ADL, RECONCILED, ENTRY_FAILED
    closed_at: int = 0
    reconcile: str = ""  # what S5 did to it (CLOSED_BY_FILL, CLOSED_NOT_AT_VENUE, QTY_TO_ZERO, ...)
    adopted_by: str = ""
    created_at: int = 0
    updated_at: int = 0

    @property
    def is_open(self) -> bool:
        return self.state in OPEN

    @property
    def direction(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def close_side(self) -> Side:
        return "SELL" if self.side == "BUY" else "BUY"


def from_doc(doc: dict) -> Position:
    """A stored document (its ``_key`` is the pos_id) as a Position; strings become Decimals."""
    # One pass: the store's ``_key``/``_rev`` are unknown fields to msgspec (ignored); a null field that
    # cannot be null decodes as its default. S6 decodes a position several times per mark.
    body = {k: v for k, v in doc.items() if v is not None or k in _NULLABLE}
    if "pos_id" not in doc:
        body["pos_id"] = doc.get("_key", "")
    return msgspec.convert(body, Position, strict=False)


class Brief(_Doc, frozen=True):
    """The fields S6's fan-outs read of every open position, per mark event and per tick."""

    pos_id: str = ""
    market: str = "FUT"
    mark_ts: int = 0
    mark_source: str = ""


def brief(doc: dict) -> Brief:
    """``from_doc`` of only ``Brief``'s fields (same rules): decoding the whole position per mark cost more than
    the query."""
    body = {k: v for k in _BRIEF if (v := doc.get(k)) is not None}
    if "pos_id" not in doc:
        body["pos_id"] = doc.get("_key", "")
    return msgspec.convert(body, Brief, strict=False)


def to_doc(pos: Position) -> dict:
    """The document to store: Decimals as strings (exact), enums as their values."""
    return msgspec.to_builtins(pos)


def replace(pos: Position, **changes) -> Position:
    return msgspec.structs.replace(pos, **changes)


_NULLABLE = frozenset(f.name for f in msgspec.structs.fields(Position) if f.default is None)
_BRIEF = tuple(f.name for f in msgspec.structs.fields(Brief))
