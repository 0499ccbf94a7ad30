"""S4's documents: order intents, their legs (one exchange order each), fills, guard stops, venue setup.

``order_intents/<intent_id>`` (``IntentDoc``), ``orders/<intent_id>:<leg>`` (``OrderLeg``),
``fills/<market>:<symbol>:<trade id>`` (``FillDoc``), ``guard_stops/<intent_id>`` (``GuardStop``),
``venue_settings/<account>:<market>:<symbol>`` (``VenueSetting``). S4 writes them; S5, S6 and the
gateway read them. Stored as plain JSON (Decimals as strings, ``to_doc``) so every reader and both
store backends see the same shape; read back with ``from_doc``.

Evolution (msgspec rules): every new field gets a default and a field's type never changes. A
document written before a field existed decodes with the default; fields another service adds to
a document (the reconciler's ``reconcile``, ``account_id``...) are ignored on read and kept by the
store's merge-patch writes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, TypeVar

import msgspec

from chimera.schemas.messages import OrderIntent, OrderResult

ZERO = Decimal(0)
T = TypeVar("T", bound=msgspec.Struct)


class _Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    pass


def to_doc(doc: msgspec.Struct) -> dict[str, Any]:
    """A document as the store keeps it (Decimals as strings)."""
    return msgspec.to_builtins(doc)


def from_doc(raw: dict | None, type_: type[T]) -> T | None:
    """A stored document as its Struct (None stays None). Numbers written as strings become Decimals."""
    return None if raw is None else msgspec.convert(raw, type_, strict=False)


class TwapSlice(_Doc, frozen=True):
    i: int
    qty: Decimal
    due: int  # clock ms the slice is due


class IntentDoc(_Doc, frozen=True):
    """An order intent and where S4 stands with it. ``phase``: NEW -> WORKING | MAKER -> MAKER_WAIT -> TAKER |
    TWAP | ENTRY -> PROTECT -> DONE; ``result`` is the final answer, re-emitted for a repeated command."""

    intent_id: str
    market: str
    symbol: str
    side: str
    qty: Decimal
    exec_policy: str = "MARKET"
    purpose: str = "ENTRY"
    price: Decimal | None = None
    stop_price: Decimal | None = None
    tp_price: Decimal | None = None
    sl_price: Decimal | None = None
    reduce_only: bool = False
    leverage: int = 20
    margin_usdt: Decimal | None = None
    signal_id: str = ""
    pos_id: str = ""
    parent_intent_id: str = ""
    bundle_id: str = ""  # copied from the OrderIntent: the bundle and rev that decided it
    config_rev: int = 0
    account_id: str = "main"  # the venue account every order of the intent goes to (the command's envelope)
    phase: str = "NEW"
    created_at: int = 0
    updated_at: int = 0
    arrival_mid: Decimal | None = None  # mid when the first leg was sent: the fills' slippage reference
    maker_deadline: int | None = None  # MakerThenTaker: end of the maker window (clock ms)
    maker_wait_ms: int | None = None  # MakerThenTaker: the window chosen (cost curve and health grade)
    taker_share: Decimal | None = None  # MakerThenTaker: the share of the order sent as taker at once
    twap_plan: list[TwapSlice] = []  # TWAP: the slices, fixed once; each slice's state is its leg
    held_qty: Decimal | None = None  # SPOT protected entry: base asset held after fees
    result: OrderResult | None = None

    @classmethod
    def new(cls, oi: OrderIntent, now_ms: int, account_id: str = "main") -> IntentDoc:
        fields = {**msgspec.structs.asdict(oi), "account_id": account_id}
        return cls(**fields, phase="NEW", created_at=now_ms, updated_at=now_ms)

    @property
    def reducing(self) -> bool:
        return self.reduce_only or self.purpose in EXIT_PURPOSES


EXIT_PURPOSES = frozenset({"EXIT", "STOP", "TAKE_PROFIT", "REDUCE", "FLATTEN"})


class BookLevels(_Doc, frozen=True):
    bids: list[tuple[Decimal, Decimal]] = []
    asks: list[tuple[Decimal, Decimal]] = []


class OrderLeg(_Doc, frozen=True):
    """One exchange order of an intent, driven through ``ORDER_FSM`` (status compare-and-set)."""

    intent_id: str
    leg: str
    client_order_id: str
    market: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: str | None = None
    reduce_only: bool = False
    algo: bool = False
    purpose: str = "ENTRY"
    pos_id: str = ""
    status: str = "INITIALIZED"
    venue_order_id: str = ""
    filled_qty: Decimal = ZERO
    avg_price: Decimal | None = None
    reason: str = ""
    reject_code: int | None = None
    created_at: int = 0
    updated_at: int = 0
    mid_at_send: Decimal | None = None
    top3_at_send: BookLevels | None = None
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None
    account_id: str = "main"  # the intent's account: the venue account holding this order

    @property
    def key(self) -> str:
        return f"{self.intent_id}:{self.leg}"


class FillDoc(_Doc, frozen=True):
    """One venue trade of a leg, with the book at send and the slippage vs the intent's arrival mid
    (bps, positive = worse)."""

    trade_id: str
    intent_id: str
    leg: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal = ZERO
    fee_asset: str = "USDT"
    is_maker: bool = False
    mid_at_send: Decimal | None = None
    top3_at_send: BookLevels | None = None
    arrival_mid: Decimal | None = None
    slippage_bps: float | None = None
    purpose: str | None = None
    pos_id: str = ""
    ts: int = 0
    account_id: str = "main"


class GuardStop(_Doc, frozen=True):
    """A SPOT stop kept by S4 itself (the venue refused conditional orders): ARMED -> FIRED | DISARMED,
    each move a compare-and-set on ``state``."""

    intent_id: str
    symbol: str
    side: str  # side of the protective exit
    qty: Decimal
    sl_price: Decimal
    state: Literal["ARMED", "FIRED", "DISARMED"] = "ARMED"
    armed_at: int = 0
    pos_id: str = ""
    fired_at: int | None = None
    fired_mid: Decimal | None = None
    disarmed_at: int | None = None


class VenueSetting(_Doc, frozen=True):
    """Leverage and margin type S4 set at the venue for one account, market and symbol."""

    account_id: str
    market: str
    symbol: str
    leverage: int
    margin_type: str
    set_at: int = 0
