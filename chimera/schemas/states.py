"""Order and position state machines as explicit transition tables.

Every legal move is one row of a table; anything else raises ``IllegalTransition`` so a
handler can dead-letter and alert instead of silently corrupting a document. Rows whose
target equals their source are deliberate: they absorb reports that Binance (or our own
at-least-once pipeline) delivers late or twice, so a replay never looks like an anomaly.

Pure module: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class IllegalTransition(Exception):
    def __init__(self, state: StrEnum, event: StrEnum) -> None:
        super().__init__(f"illegal transition: {event} in state {state}")
        self.state = state
        self.event = event


class OrderStatus(StrEnum):
    INITIALIZED = "INITIALIZED"  # persisted before the request goes on the wire
    SUBMITTED = "SUBMITTED"
    UNKNOWN = "UNKNOWN"  # timeout/5xx: may or may not exist at the venue; resolve by query
    ACCEPTED = "ACCEPTED"  # NEW at the venue
    TRIGGERED = "TRIGGERED"  # conditional (stop/TP) order armed -> working
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"  # IOC/FOK remainder, GTX (post-only) that would take, STP


class OrderEvent(StrEnum):
    ORDER_SUBMITTED = "OrderSubmitted"
    ORDER_DENIED = "OrderDenied"  # refused locally before the wire (pre-trade check)
    ORDER_TIMED_OUT = "OrderTimedOut"  # timeout, 5xx or lost connection after sending
    ORDER_RESOLVED_NOT_FOUND = "OrderResolvedNotFound"  # query after grace: never reached the venue
    ORDER_ACCEPTED = "OrderAccepted"
    ORDER_REJECTED = "OrderRejected"
    ORDER_TRIGGERED = "OrderTriggered"
    ORDER_PARTIALLY_FILLED = "OrderPartiallyFilled"
    ORDER_FILLED = "OrderFilled"
    ORDER_CANCEL_REQUESTED = "OrderCancelRequested"
    ORDER_CANCEL_REJECTED = "OrderCancelRejected"
    ORDER_CANCELED = "OrderCanceled"
    ORDER_EXPIRED = "OrderExpired"


class PositionStatus(StrEnum):
    PENDING_ENTRY = "PENDING_ENTRY"
    ACTIVE = "ACTIVE"
    PENDING_CLOSING = "PENDING_CLOSING"
    CLOSED = "CLOSED"
    FAILED = "FAILED"  # entry ended with zero fill
    ROLLED_BACK = "ROLLED_BACK"  # crash leftover the reconciler could not adopt


class PositionEventKind(StrEnum):
    """What can happen to a position: the inputs of POSITION_FSM (the message S6 publishes is
    ``messages.PositionChanged``)."""

    ENTRY_FILLED = "EntryFilled"  # any entry/add fill, partial or full
    ENTRY_FAILED = "EntryFailed"  # every entry order ended without a fill
    POSITION_ADOPTED = "PositionAdopted"  # reconciler proved the leftover is ours
    ROLLED_BACK = "RolledBack"
    CLOSE_REQUESTED = "CloseRequested"
    CLOSE_FAILED = "CloseFailed"  # close order rejected/canceled: still exposed
    POSITION_REDUCED = "PositionReduced"  # partial close fill
    POSITION_CLOSED = "PositionClosed"  # flat: our close, exchange SL/TP, liquidation, or reconciled


@dataclass(frozen=True, slots=True)
class StateMachine:
    table: Mapping[tuple[StrEnum, StrEnum], StrEnum]
    terminal: frozenset[StrEnum]

    def transition(self, state: StrEnum, event: StrEnum) -> StrEnum:
        try:
            return self.table[(state, event)]
        except KeyError:
            raise IllegalTransition(state, event) from None

    def can(self, state: StrEnum, event: StrEnum) -> bool:
        return (state, event) in self.table

    def is_terminal(self, state: StrEnum) -> bool:
        return state in self.terminal

    def events_from(self, state: StrEnum) -> frozenset[StrEnum]:
        return frozenset(e for (s, e) in self.table if s == state)


_Row = tuple[list[StrEnum], StrEnum, StrEnum | None]


def _table(rows: list[_Row]) -> Mapping:
    # A target of None means "stay where you are" (an explicit, reviewed self-loop).
    table: dict[tuple[StrEnum, StrEnum], StrEnum] = {}
    for sources, event, target in rows:
        for src in sources:
            if (src, event) in table:  # a duplicate row would make the table ambiguous to read
                raise AssertionError(f"duplicate transition row {(src, event)}")
            table[(src, event)] = src if target is None else target
    return MappingProxyType(table)


S, E = OrderStatus, OrderEvent
_LIVE = [S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED]

# (sources, event, target); sources listed once per event to keep the table reviewable.
ORDER_TRANSITIONS: Mapping[tuple[OrderStatus, OrderEvent], OrderStatus] = _table([
    ([S.INITIALIZED], E.ORDER_SUBMITTED, S.SUBMITTED),
    ([S.INITIALIZED], E.ORDER_DENIED, S.REJECTED),
    ([S.SUBMITTED], E.ORDER_TIMED_OUT, S.UNKNOWN),
    ([S.UNKNOWN], E.ORDER_RESOLVED_NOT_FOUND, S.REJECTED),
    # A second ack (WS after REST, or after a query resolved UNKNOWN) and an ack that
    # arrives after the order already filled/ended are stale: keep the current state.
    ([S.SUBMITTED, S.UNKNOWN], E.ORDER_ACCEPTED, S.ACCEPTED),
    ([S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.FILLED, S.CANCELED, S.EXPIRED],
     E.ORDER_ACCEPTED, None),
    ([S.SUBMITTED, S.UNKNOWN], E.ORDER_REJECTED, S.REJECTED),
    ([S.SUBMITTED, S.UNKNOWN, S.ACCEPTED], E.ORDER_TRIGGERED, S.TRIGGERED),
    ([S.TRIGGERED, S.PENDING_CANCEL], E.ORDER_TRIGGERED, None),
    # Fill before ack is normal on Binance (user-data WS can beat the REST response).
    ([S.SUBMITTED, S.UNKNOWN, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED], E.ORDER_PARTIALLY_FILLED,
     S.PARTIALLY_FILLED),
    # Late partial-fill reports after the order ended are booked but do not reopen it.
    ([S.PENDING_CANCEL, S.FILLED, S.CANCELED, S.EXPIRED], E.ORDER_PARTIALLY_FILLED, None),
    # A fill is an irrevocable venue fact: it beats a pending or locally inferred
    # cancel/expiry ("FILLED wins"). REJECTED is excluded on purpose: a fill there means
    # the not-found resolution was wrong and must surface as an alert.
    ([S.SUBMITTED, S.UNKNOWN, *_LIVE, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED], E.ORDER_FILLED, S.FILLED),
    ([S.FILLED], E.ORDER_FILLED, S.FILLED),
    ([S.SUBMITTED, *_LIVE], E.ORDER_CANCEL_REQUESTED, S.PENDING_CANCEL),
    # The cancel was refused (typically -2011 unknown order): the order's real state is
    # unknown until queried. Arriving after the fill/cancel already landed it is stale.
    ([S.PENDING_CANCEL], E.ORDER_CANCEL_REJECTED, S.UNKNOWN),
    ([S.UNKNOWN, S.FILLED, S.CANCELED, S.EXPIRED], E.ORDER_CANCEL_REJECTED, None),
    ([S.SUBMITTED, S.UNKNOWN, *_LIVE, S.PENDING_CANCEL], E.ORDER_CANCELED, S.CANCELED),
    ([S.CANCELED, S.FILLED], E.ORDER_CANCELED, None),
    ([S.SUBMITTED, S.UNKNOWN, *_LIVE, S.PENDING_CANCEL], E.ORDER_EXPIRED, S.EXPIRED),
    ([S.EXPIRED, S.FILLED], E.ORDER_EXPIRED, None),
])

P, PE = PositionStatus, PositionEventKind

POSITION_TRANSITIONS: Mapping[tuple[PositionStatus, PositionEventKind], PositionStatus] = _table([
    ([P.PENDING_ENTRY], PE.ENTRY_FILLED, P.ACTIVE),
    # More entry/add fills; a late entry fill while closing just enlarges what to close.
    ([P.ACTIVE, P.PENDING_CLOSING], PE.ENTRY_FILLED, None),
    ([P.PENDING_ENTRY], PE.ENTRY_FAILED, P.FAILED),
    ([P.PENDING_ENTRY], PE.POSITION_ADOPTED, P.ACTIVE),
    ([P.PENDING_ENTRY], PE.ROLLED_BACK, P.ROLLED_BACK),
    ([P.ACTIVE], PE.CLOSE_REQUESTED, P.PENDING_CLOSING),
    ([P.PENDING_CLOSING], PE.CLOSE_REQUESTED, P.PENDING_CLOSING),  # escalation, e.g. maker -> market
    ([P.PENDING_CLOSING], PE.CLOSE_FAILED, P.ACTIVE),
    ([P.ACTIVE, P.PENDING_CLOSING], PE.POSITION_REDUCED, None),
    # ACTIVE -> CLOSED without a request: exchange-side SL/TP, liquidation, reconciled flat.
    ([P.ACTIVE, P.PENDING_CLOSING], PE.POSITION_CLOSED, P.CLOSED),
])


ORDER_TERMINAL = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED})
POSITION_TERMINAL = frozenset({P.CLOSED, P.FAILED, P.ROLLED_BACK})

ORDER_FSM = StateMachine(ORDER_TRANSITIONS, ORDER_TERMINAL)
POSITION_FSM = StateMachine(POSITION_TRANSITIONS, POSITION_TERMINAL)

del S, E, P, PE


def _fsm_for(state: StrEnum) -> StateMachine:
    if isinstance(state, OrderStatus):
        return ORDER_FSM
    if isinstance(state, PositionStatus):
        return POSITION_FSM
    raise TypeError(f"not a state of a known machine: {state!r}")


def transition(state: OrderStatus | PositionStatus, event: OrderEvent | PositionEventKind):
    """Next state for ``event`` in ``state``; raises ``IllegalTransition`` otherwise."""
    return _fsm_for(state).transition(state, event)


def is_terminal(state: OrderStatus | PositionStatus) -> bool:
    """True once the order/position is over at the venue.

    Stale reports are still absorbed by self-loops, and an order inferred CANCELED/EXPIRED
    can still be corrected to FILLED by a fill report: a fill is the venue's final word.
    """
    return _fsm_for(state).is_terminal(state)


# Binance order status (REST `status`, user-data `X`) -> the event it reports.
_BINANCE_STATUS_EVENT: Mapping[str, OrderEvent] = MappingProxyType({
    "NEW": OrderEvent.ORDER_ACCEPTED,
    "PARTIALLY_FILLED": OrderEvent.ORDER_PARTIALLY_FILLED,
    "FILLED": OrderEvent.ORDER_FILLED,
    "CANCELED": OrderEvent.ORDER_CANCELED,
    "REJECTED": OrderEvent.ORDER_REJECTED,
    "EXPIRED": OrderEvent.ORDER_EXPIRED,
    "EXPIRED_IN_MATCH": OrderEvent.ORDER_EXPIRED,  # self-trade prevention
    "TRIGGERED": OrderEvent.ORDER_TRIGGERED,  # algo (conditional) order service
})


def order_event_for_venue_status(status: str) -> OrderEvent:
    """Event implied by a Binance order status string; ``KeyError`` on an unknown status."""
    return _BINANCE_STATUS_EVENT[status.upper()]
