"""Every payload S1–S6 exchange (spec 001 §A, §B), as frozen tagged msgspec Structs.

Commands are imperatives (``SubmitOrder``), events are past tense (``OrderFilled`` lives in the
order state machine; on streams the router publishes ``OrderResult``). Money is ``Decimal``.
See ``envelope.py`` for the evolution rules every change here must follow.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from chimera.schemas.envelope import Message, register

Market = Literal["spot", "perp"]
Side = Literal["BUY", "SELL"]
ProductMarket = Literal["FUT", "SPOT"]
ExecPolicy = Literal["MakerThenTaker", "TWAP", "MARKET", "OCO", "GUARD", "LIMIT", "STOP"]
Purpose = Literal["ENTRY", "EXIT", "STOP", "TAKE_PROFIT", "ADD", "REDUCE", "FLATTEN"]


# --- S1: market data -------------------------------------------------------------------


class BookTicker(Message, frozen=True, tag="book_ticker"):
    market: Market
    symbol: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    mid: Decimal
    spread_bp: float
    ts: int  # exchange event time, ms


class Trade(Message, frozen=True, tag="trade"):
    market: Market
    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    buyer_is_maker: bool
    ts: int


class Kline(Message, frozen=True, tag="kline"):
    market: Market
    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool = True
    backfilled: bool = False


class DepthLevels(Message, frozen=True, tag="depth"):
    market: Market
    symbol: str
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    ts: int


class MarkPrice(Message, frozen=True, tag="mark_price"):
    symbol: str
    mark_price: Decimal
    index_price: Decimal | None = None
    funding_rate: Decimal | None = None
    next_funding_time: int = 0
    ts: int = 0


class FundingEvent(Message, frozen=True, tag="funding"):
    """Next (predicted) or settled funding for a perp symbol."""

    symbol: str
    funding_time: int
    rate: Decimal
    settled: bool = False
    amount_usdt: Decimal | None = None  # for settlements booked against an account
    tran_id: str = ""  # the venue's income row of a settlement (S6 books each once)


class AccountStreamStatus(Message, frozen=True, tag="account_stream_status"):
    ws_status: Literal["CONNECTING", "CONNECTED", "DISCONNECTED", "DISABLED"]
    last_error: str = ""
    last_connected_at: int = 0
    market: str = ""  # keys.S1_STATUS_MARKETS; "" = the account as a whole (DISABLED, stopped)


# --- S2: features ------------------------------------------------------------------------


class FeaturesComputed(Message, frozen=True, tag="features"):
    signal_id: str
    t0: int
    symbol: str
    features: dict[str, float | None]
    flags: dict[str, list[str]] = {}
    prev: dict[str, float | None] = {}  # the bar features at the previous bar (rules' crosses_above/below)


class RecomputeFeatures(Message, frozen=True, tag="recompute_features"):
    symbol: str
    start_ms: int
    end_ms: int


# --- S3: decisions and intents -------------------------------------------------------------


class Decide(Message, frozen=True, tag="decide"):
    """Ask S3 for a decision on a signal (the gateway's POST /decide produces this)."""

    signal_id: str
    symbol: str
    side: Side | None = None
    account_id: str = ""  # the account to decide for ("": the bundle's strategy.account_id, else main)


class Decision(Message, frozen=True, tag="decision"):
    signal_id: str
    symbol: str
    action: Literal["open", "skip"]
    side: Side | None = None
    size_mult: float = 1.0
    tp_mult: float = 1.0
    sl_mult: float = 1.0
    reason: str = ""
    model_p: float | None = None
    account_id: str = ""  # the account the decision trades ("" = the envelope's)


class OrderIntent(Message, frozen=True, tag="order_intent"):
    intent_id: str
    market: ProductMarket
    symbol: str
    side: Side
    qty: Decimal
    exec_policy: ExecPolicy = "MARKET"
    purpose: Purpose = "ENTRY"
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
    bundle_id: str = ""  # the bundle and rev whose decision this is (S3 sets them; results are attributed by them)
    config_rev: int = 0
    # The venue account to trade on. "" = the envelope's; when both name one they must agree (S4
    # dead-letters a mismatch rather than guess which account was meant).
    account_id: str = ""


# --- S4: order commands and results ---------------------------------------------------------


class SubmitOrder(Message, frozen=True, tag="submit_order"):
    intent: OrderIntent


class CancelOrder(Message, frozen=True, tag="cancel_order"):
    intent_id: str
    symbol: str = ""
    client_order_id: str = ""
    market: ProductMarket = "FUT"
    escalate_to_market: bool = False
    reason: str = ""


class OrderResult(Message, frozen=True, tag="order_result"):
    intent_id: str
    leg: str
    client_order_id: str
    symbol: str
    status: str  # an OrderStatus value (chimera.schemas.states)
    side: Side | None = None
    purpose: Purpose = "ENTRY"
    venue_order_id: str = ""
    qty: Decimal = Decimal(0)
    filled_qty: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    reason: str = ""
    pos_id: str = ""
    account_id: str = ""  # the intent's account (S4 sets it; "" from before accounts: main)


class VenueReport(Message, frozen=True, tag="venue_report"):
    """A user-data order update, normalized from Binance's ORDER_TRADE_UPDATE / executionReport."""

    market: ProductMarket
    symbol: str
    client_order_id: str
    venue_order_id: str
    side: Side
    order_type: str
    exec_type: str  # NEW, TRADE, CANCELED, EXPIRED, CALCULATED (liquidation), ...
    order_status: str
    qty: Decimal
    price: Decimal = Decimal(0)
    cum_qty: Decimal = Decimal(0)
    last_qty: Decimal = Decimal(0)
    last_price: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    commission_asset: str = ""
    trade_id: int = 0
    realized_pnl: Decimal = Decimal(0)
    reduce_only: bool = False
    is_maker: bool = False
    ts: int = 0
    position_side: str = "BOTH"  # Binance "ps": BOTH (one-way mode) | LONG | SHORT (hedge mode)


# --- S6: positions ----------------------------------------------------------------------------


PositionChangeKind = Literal["OPENED", "SL_ARMED", "TP_PLACED", "TRAIL_MOVED", "REDUCED", "ADDED", "EXIT", "ADOPTED",
                             "FAILED", "CLOSE_FAILED", "STAGNATED"]


class PositionChanged(Message, frozen=True, tag="position_changed"):
    """What happened to a position (past tense: S6 publishes it on ``pos:events`` after the write)."""

    pos_id: str
    kind: PositionChangeKind
    symbol: str
    side: Side
    qty: Decimal
    state: str  # a PositionStatus value
    entry_price: Decimal | None = None
    sl_price: Decimal | None = None
    exit_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    intent_id: str = ""


class ManagePositions(Message, frozen=True, tag="manage_positions"):
    """The S6 management tick (scheduled) or, with ``pos_id``, one position's management pass (fanned
    out by the tick, or by a mark price event carrying ``mark_price``/``mark_ts``)."""

    symbol: str = ""
    pos_id: str = ""
    mark_price: Decimal | None = None
    mark_ts: int = 0


# --- S1 treasury ---------------------------------------------------------------------------------


TransferType = Literal["MAIN_UMFUTURE", "UMFUTURE_MAIN"]


class TransferRequest(Message, frozen=True, tag="transfer_request"):
    transfer_id: str
    asset: str
    amount: Decimal
    direction: TransferType
    requested_by: str = ""
    reason: str = ""


class TransferResponse(Message, frozen=True, tag="transfer_response"):
    transfer_id: str
    result: Literal["SUCCEEDED", "FAILED", "PENDING"]
    message: str = ""


# --- config, ops, alerts, metrics, reconcile, scheduler ------------------------------------------


class ConfigActivated(Message, frozen=True, tag="config_activated"):
    bundle_id: str
    rev: int


class OpsEvent(Message, frozen=True, tag="ops_event"):
    kind: str  # e.g. KILL_SWITCH_SET, WS_RECONNECT, DATA_GAP, BACKFILL_DONE, TRANSFER_EXECUTED
    actor: str = ""
    detail: dict[str, str] = {}


class Alert(Message, frozen=True, tag="alert"):
    level: Literal["INFO", "WARN", "ERROR", "CRITICAL"]
    code: str
    message: str
    context: dict[str, str] = {}


class MetricEvent(Message, frozen=True, tag="metric"):
    name: str
    value: float
    labels: dict[str, str] = {}
    ts: int = 0


class Reconcile(Message, frozen=True, tag="reconcile"):
    scope: Literal["ALL", "ORDERS", "POSITIONS"] = "ALL"
    requested_by: str = ""


class TimerFired(Message, frozen=True, tag="timer"):
    """A due-queue entry turned into a message (maker window, TWAP slice, tick...)."""

    name: str
    ref: str = ""
    due_ms: int = 0
    data: dict[str, str] = {}


class DeadLetter(Message, frozen=True, tag="dead_letter"):
    stream: str
    group: str
    entry_id: str
    fields: dict[str, bytes]
    reason: str
    attempts: int
    consumer: str = ""
    failed_at: int = 0


class Noop(Message, frozen=True, tag="noop"):
    """Benchmarks and tests: a message whose handling is free."""

    n: int = 0
    data: str = ""


register(
    BookTicker, Trade, Kline, DepthLevels, MarkPrice, FundingEvent, AccountStreamStatus,
    FeaturesComputed, RecomputeFeatures, Decide, Decision, OrderIntent, SubmitOrder, CancelOrder,
    OrderResult, VenueReport, PositionChanged, ManagePositions, TransferRequest,
    TransferResponse, ConfigActivated, OpsEvent, Alert, MetricEvent, Reconcile, TimerFired,
    DeadLetter, Noop,
)

# --- S7 labels / S8 autopsy (research loop) ------------------------------------------------------


class BackfillLabels(Message, frozen=True, tag="backfill_labels"):
    """Label every signal whose horizon has passed and that has no label for ``h`` hours yet."""

    h: Literal[12, 24, 36] = 24
    requested_by: str = ""


class LabelsReady(Message, frozen=True, tag="labels_ready"):
    """S7 wrote labels for ``h`` (on ``labels:{ready}``): ``count`` signals up to ``up_to_ms``."""

    h: int
    count: int
    up_to_ms: int
    signal_ids: list[str] = []


class RequestAutopsy(Message, frozen=True, tag="request_autopsy"):
    """Write (or rewrite) the autopsy of one trade; ``trade_id`` is the position id."""

    trade_id: str
    requested_by: str = ""


class RunExperiment(Message, frozen=True, tag="run_experiment"):
    """Run the PENDING hypotheses of ``family`` through walk-forward on ``symbol``'s bars in [start, end)."""

    experiment_id: str
    family: str
    symbol: str
    start_ms: int
    end_ms: int
    horizon_h: Literal[12, 24, 36] = 12
    train_days: int = 2
    test_days: int = 1
    period_min: int = 15
    requested_by: str = ""
    distribute: bool = False  # one RunTrial per hypothesis on exp:{trials}, taken by any s9 replica


class RunTrial(Message, frozen=True, tag="run_trial"):
    """Walk one hypothesis of a distributed experiment forward (S9 replicas share ``exp:{trials}``)."""

    experiment_id: str
    hypothesis_id: str


class FinalizeExperiment(Message, frozen=True, tag="finalize_experiment"):
    """Every trial of the experiment is in: compute the family's statistics and the verdicts."""

    experiment_id: str


register(BackfillLabels, LabelsReady, RequestAutopsy, RunExperiment, RunTrial, FinalizeExperiment)

__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, msgspec.Struct)]

# --- S10 config service (promotions) --------------------------------------------------------------


class PromoteBundle(Message, frozen=True, tag="promote_bundle"):
    """Start the staged rollout of a stored bundle (on ``cfg:{commands}``, handled by S10)."""

    promotion_id: str
    bundle_id: str
    rev: int
    requested_by: str = ""
    approved_by: str = ""  # a second person for real capital (the gateway's approvals, else --approved-by)


class PromotionCommand(Message, frozen=True, tag="promotion_command"):
    """An operator's RESUME (a paused rollout continues its stage) or ABORT (roll back now)."""

    promotion_id: str
    action: Literal["RESUME", "ABORT"]
    by: str = ""


register(PromoteBundle, PromotionCommand)


class SimulateBundle(Message, frozen=True, tag="simulate_bundle"):
    """Simulate a candidate against the active bundle (S10, on ``cfg:{commands}``): the result, or the
    reason it failed, becomes ``simulations/<simulation_id>``. The candidate is a stored
    ``bundle_id``/``rev`` or an inline ``bundle`` body (created with lint + dry-run first)."""

    simulation_id: str
    bundle_id: str = ""
    rev: int = 0
    bundle: dict | None = None
    data: tuple[str, ...] = ("sample",)  # as ``chimera backtest --data``
    from_text: str = ""
    to_text: str = ""
    eps: float = 0.05
    requested_by: str = ""


register(SimulateBundle)
