import itertools

import pytest

from chimera.schemas.states import (
    ORDER_FSM,
    ORDER_TRANSITIONS,
    POSITION_FSM,
    POSITION_TRANSITIONS,
    IllegalTransition,
    OrderEvent,
    OrderStatus,
    PositionEventKind,
    PositionStatus,
    is_terminal,
    order_event_for_venue_status,
    transition,
)

# Written out by hand (not generated from the module) so a change to the table is a
# deliberate, reviewed change to this list too.
ORDER_ALLOWED = [
    ("INITIALIZED", "OrderSubmitted", "SUBMITTED"),
    ("INITIALIZED", "OrderDenied", "REJECTED"),
    ("SUBMITTED", "OrderTimedOut", "UNKNOWN"),
    ("UNKNOWN", "OrderResolvedNotFound", "REJECTED"),
    ("SUBMITTED", "OrderAccepted", "ACCEPTED"),
    ("UNKNOWN", "OrderAccepted", "ACCEPTED"),
    ("ACCEPTED", "OrderAccepted", "ACCEPTED"),
    ("TRIGGERED", "OrderAccepted", "TRIGGERED"),
    ("PARTIALLY_FILLED", "OrderAccepted", "PARTIALLY_FILLED"),
    ("PENDING_CANCEL", "OrderAccepted", "PENDING_CANCEL"),
    ("FILLED", "OrderAccepted", "FILLED"),
    ("CANCELED", "OrderAccepted", "CANCELED"),
    ("EXPIRED", "OrderAccepted", "EXPIRED"),
    ("SUBMITTED", "OrderRejected", "REJECTED"),
    ("UNKNOWN", "OrderRejected", "REJECTED"),
    ("SUBMITTED", "OrderTriggered", "TRIGGERED"),
    ("UNKNOWN", "OrderTriggered", "TRIGGERED"),
    ("ACCEPTED", "OrderTriggered", "TRIGGERED"),
    ("TRIGGERED", "OrderTriggered", "TRIGGERED"),
    ("PENDING_CANCEL", "OrderTriggered", "PENDING_CANCEL"),
    ("SUBMITTED", "OrderPartiallyFilled", "PARTIALLY_FILLED"),
    ("UNKNOWN", "OrderPartiallyFilled", "PARTIALLY_FILLED"),
    ("ACCEPTED", "OrderPartiallyFilled", "PARTIALLY_FILLED"),
    ("TRIGGERED", "OrderPartiallyFilled", "PARTIALLY_FILLED"),
    ("PARTIALLY_FILLED", "OrderPartiallyFilled", "PARTIALLY_FILLED"),
    ("PENDING_CANCEL", "OrderPartiallyFilled", "PENDING_CANCEL"),
    ("FILLED", "OrderPartiallyFilled", "FILLED"),
    ("CANCELED", "OrderPartiallyFilled", "CANCELED"),
    ("EXPIRED", "OrderPartiallyFilled", "EXPIRED"),
    ("SUBMITTED", "OrderFilled", "FILLED"),
    ("UNKNOWN", "OrderFilled", "FILLED"),
    ("ACCEPTED", "OrderFilled", "FILLED"),
    ("TRIGGERED", "OrderFilled", "FILLED"),
    ("PARTIALLY_FILLED", "OrderFilled", "FILLED"),
    ("PENDING_CANCEL", "OrderFilled", "FILLED"),
    ("CANCELED", "OrderFilled", "FILLED"),
    ("EXPIRED", "OrderFilled", "FILLED"),
    ("FILLED", "OrderFilled", "FILLED"),
    ("SUBMITTED", "OrderCancelRequested", "PENDING_CANCEL"),
    ("ACCEPTED", "OrderCancelRequested", "PENDING_CANCEL"),
    ("TRIGGERED", "OrderCancelRequested", "PENDING_CANCEL"),
    ("PARTIALLY_FILLED", "OrderCancelRequested", "PENDING_CANCEL"),
    ("PENDING_CANCEL", "OrderCancelRejected", "UNKNOWN"),
    ("UNKNOWN", "OrderCancelRejected", "UNKNOWN"),
    ("FILLED", "OrderCancelRejected", "FILLED"),
    ("CANCELED", "OrderCancelRejected", "CANCELED"),
    ("EXPIRED", "OrderCancelRejected", "EXPIRED"),
    ("SUBMITTED", "OrderCanceled", "CANCELED"),
    ("UNKNOWN", "OrderCanceled", "CANCELED"),
    ("ACCEPTED", "OrderCanceled", "CANCELED"),
    ("TRIGGERED", "OrderCanceled", "CANCELED"),
    ("PARTIALLY_FILLED", "OrderCanceled", "CANCELED"),
    ("PENDING_CANCEL", "OrderCanceled", "CANCELED"),
    ("CANCELED", "OrderCanceled", "CANCELED"),
    ("FILLED", "OrderCanceled", "FILLED"),
    ("SUBMITTED", "OrderExpired", "EXPIRED"),
    ("UNKNOWN", "OrderExpired", "EXPIRED"),
    ("ACCEPTED", "OrderExpired", "EXPIRED"),
    ("TRIGGERED", "OrderExpired", "EXPIRED"),
    ("PARTIALLY_FILLED", "OrderExpired", "EXPIRED"),
    ("PENDING_CANCEL", "OrderExpired", "EXPIRED"),
    ("EXPIRED", "OrderExpired", "EXPIRED"),
    ("FILLED", "OrderExpired", "FILLED"),
]

POSITION_ALLOWED = [
    ("PENDING_ENTRY", "EntryFilled", "ACTIVE"),
    ("ACTIVE", "EntryFilled", "ACTIVE"),
    ("PENDING_CLOSING", "EntryFilled", "PENDING_CLOSING"),
    ("PENDING_ENTRY", "EntryFailed", "FAILED"),
    ("PENDING_ENTRY", "PositionAdopted", "ACTIVE"),
    ("PENDING_ENTRY", "RolledBack", "ROLLED_BACK"),
    ("ACTIVE", "CloseRequested", "PENDING_CLOSING"),
    ("PENDING_CLOSING", "CloseRequested", "PENDING_CLOSING"),
    ("PENDING_CLOSING", "CloseFailed", "ACTIVE"),
    ("ACTIVE", "PositionReduced", "ACTIVE"),
    ("PENDING_CLOSING", "PositionReduced", "PENDING_CLOSING"),
    ("ACTIVE", "PositionClosed", "CLOSED"),
    ("PENDING_CLOSING", "PositionClosed", "CLOSED"),
]

MACHINES = [
    (OrderStatus, OrderEvent, ORDER_ALLOWED, ORDER_TRANSITIONS),
    (PositionStatus, PositionEventKind, POSITION_ALLOWED, POSITION_TRANSITIONS),
]


@pytest.mark.parametrize(("state", "event", "target"), ORDER_ALLOWED)
def test_order_allowed(state, event, target):
    assert transition(OrderStatus(state), OrderEvent(event)) is OrderStatus(target)


@pytest.mark.parametrize(("state", "event", "target"), POSITION_ALLOWED)
def test_position_allowed(state, event, target):
    assert transition(PositionStatus(state), PositionEventKind(event)) is PositionStatus(target)


@pytest.mark.parametrize(("states", "events", "allowed", "table"), MACHINES)
def test_table_is_exactly_the_reviewed_list(states, events, allowed, table):
    assert len(allowed) == len({(s, e) for s, e, _ in allowed})
    assert {(str(s), str(e)): str(t) for (s, e), t in table.items()} == {
        (s, e): t for s, e, t in allowed
    }


@pytest.mark.parametrize(("states", "events", "allowed", "table"), MACHINES)
def test_every_other_pair_is_refused(states, events, allowed, table):
    ok = {(s, e) for s, e, _ in allowed}
    refused = 0
    for state, event in itertools.product(states, events):
        if (str(state), str(event)) in ok:
            continue
        refused += 1
        with pytest.raises(IllegalTransition) as info:
            transition(state, event)
        assert info.value.state is state and info.value.event is event
        assert str(state) in str(info.value) and str(event) in str(info.value)
    assert refused == len(states) * len(events) - len(ok)


def test_terminal_states():
    assert {s for s in OrderStatus if is_terminal(s)} == {
        OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED
    }
    assert {s for s in PositionStatus if is_terminal(s)} == {
        PositionStatus.CLOSED, PositionStatus.FAILED, PositionStatus.ROLLED_BACK
    }


@pytest.mark.parametrize("fsm", [ORDER_FSM, POSITION_FSM])
def test_terminal_states_only_leave_towards_filled(fsm):
    for (state, _event), target in fsm.table.items():
        if fsm.is_terminal(state):
            assert target == state or target == OrderStatus.FILLED


def test_non_terminal_states_are_reachable_and_can_progress():
    for fsm, start in ((ORDER_FSM, OrderStatus.INITIALIZED), (POSITION_FSM, PositionStatus.PENDING_ENTRY)):
        seen, todo = {start}, [start]
        while todo:
            s = todo.pop()
            for e in fsm.events_from(s):
                t = fsm.transition(s, e)
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        assert seen == set(type(start))
        for s in type(start):
            if s not in fsm.terminal:
                assert any(fsm.transition(s, e) != s for e in fsm.events_from(s)), s


def _run(fsm, start, events):
    state = start
    for e in events:
        state = fsm.transition(state, e)
    return state


def test_binance_reorderings():
    E, S = OrderEvent, OrderStatus
    # user-data fill before the REST ack, then the stale ack
    assert _run(ORDER_FSM, S.INITIALIZED, [E.ORDER_SUBMITTED, E.ORDER_FILLED, E.ORDER_ACCEPTED]) is S.FILLED
    # cancel racing a fill: the fill lands, then the cancel is refused (-2011)
    assert _run(ORDER_FSM, S.ACCEPTED, [E.ORDER_CANCEL_REQUESTED, E.ORDER_FILLED,
                                        E.ORDER_CANCEL_REJECTED]) is S.FILLED
    # cancel refused first: unknown until the query (or the fill report) resolves it
    assert _run(ORDER_FSM, S.ACCEPTED, [E.ORDER_CANCEL_REQUESTED, E.ORDER_CANCEL_REJECTED]) is S.UNKNOWN
    # partial fill report arriving after the cancel confirmation
    assert _run(ORDER_FSM, S.PARTIALLY_FILLED, [E.ORDER_CANCEL_REQUESTED, E.ORDER_CANCELED,
                                                E.ORDER_PARTIALLY_FILLED]) is S.CANCELED
    # timeout resolved by query
    assert _run(ORDER_FSM, S.SUBMITTED, [E.ORDER_TIMED_OUT, E.ORDER_PARTIALLY_FILLED]) is S.PARTIALLY_FILLED
    # GTX post-only that would take
    assert _run(ORDER_FSM, S.SUBMITTED, [E.ORDER_ACCEPTED, E.ORDER_EXPIRED]) is S.EXPIRED
    # a late fill is never swallowed by a rejected not-found resolution: it must alert
    with pytest.raises(IllegalTransition):
        _run(ORDER_FSM, S.SUBMITTED, [E.ORDER_TIMED_OUT, E.ORDER_RESOLVED_NOT_FOUND, E.ORDER_FILLED])


def test_position_lifecycle():
    P, E = PositionStatus, PositionEventKind
    assert _run(POSITION_FSM, P.PENDING_ENTRY, [E.ENTRY_FILLED, E.ENTRY_FILLED, E.CLOSE_REQUESTED,
                                                E.CLOSE_FAILED, E.CLOSE_REQUESTED, E.POSITION_REDUCED,
                                                E.POSITION_CLOSED]) is P.CLOSED
    assert _run(POSITION_FSM, P.PENDING_ENTRY, [E.ENTRY_FAILED]) is P.FAILED
    with pytest.raises(IllegalTransition):
        transition(P.CLOSED, E.ENTRY_FILLED)


@pytest.mark.parametrize(("status", "event"), [
    ("NEW", OrderEvent.ORDER_ACCEPTED), ("partially_filled", OrderEvent.ORDER_PARTIALLY_FILLED),
    ("FILLED", OrderEvent.ORDER_FILLED), ("CANCELED", OrderEvent.ORDER_CANCELED),
    ("REJECTED", OrderEvent.ORDER_REJECTED), ("EXPIRED", OrderEvent.ORDER_EXPIRED),
    ("EXPIRED_IN_MATCH", OrderEvent.ORDER_EXPIRED), ("TRIGGERED", OrderEvent.ORDER_TRIGGERED),
])
def test_venue_status_mapping(status, event):
    assert order_event_for_venue_status(status) is event


def test_unknown_inputs():
    with pytest.raises(KeyError):
        order_event_for_venue_status("WHATEVER")
    with pytest.raises(TypeError):
        transition("ACCEPTED", OrderEvent.ORDER_FILLED)
    # mixing machines is refused, not silently looked up
    with pytest.raises(IllegalTransition):
        transition(OrderStatus.ACCEPTED, PositionEventKind.ENTRY_FILLED)
