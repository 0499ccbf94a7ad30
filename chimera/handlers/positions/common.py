"""S6's toolkit: the typed position document and its compare-and-set writes, snapshots and
``PositionChanged`` events, bundle parameters, orders for a position, and the risk port.

The position (``positions/<pos_id>``, ``schemas/documents/positions.py``) is the only state S6 keeps:
its stop, take-profit ladder and add-on progress are sub-structs of it. A handler reads it, computes
the next version and the orders, writes it once with ``save`` (compare-and-set on ``version``) and
returns the orders: the runtime publishes them only after the write, so what was asked for is on
record before it goes out. A lost compare-and-set raises ``Conflict``; the role re-runs the handler
on the fresh document (``retrying``).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.common import venue
from chimera.risk.state import state_for
from chimera.schemas.documents.positions import Brief, Position, brief, from_doc, replace, to_doc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import OrderIntent, PositionChanged, SubmitOrder
from chimera.schemas.states import POSITION_FSM, IllegalTransition, PositionEventKind, PositionStatus
from chimera.store.collections import POSITIONS, POSITIONS_SNAPSHOTS
from chimera.streams import keys
from chimera.streams.producer import CancelTimer, Emit
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context

P = PositionStatus
PE = PositionEventKind
OPEN_STATES = [P.ACTIVE.value, P.PENDING_CLOSING.value]
ZERO = Decimal(0)
CONFLICT_TRIES = 5

Out = list[Emit | CancelTimer]


class Conflict(RetryableError):
    """The position moved between our read and our write (another delivery wrote it first)."""


# --- bundle parameters ----------------------------------------------------------------------------


def param(ctx: Context, name: str, default: Any) -> Any:
    """``positions.<name>`` from the active bundle (flat or nested ``{"positions": {...}}``)."""
    return ctx.config.param("positions", name, default)


def pairs(ctx: Context, name: str) -> list[tuple[Decimal, Decimal]]:
    """``positions.<name>`` as a list of ``[number, number]`` sorted by the first; a clear error otherwise."""
    raw = param(ctx, name, [])
    out = []
    for i, row in enumerate(raw):
        try:
            a, b = row
            out.append((Decimal(str(a)), Decimal(str(b))))
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise PermanentError(f"bundle positions.{name}[{i}]={row!r}: expected [number, number]") from exc
    return sorted(out)


# --- the document ----------------------------------------------------------------------------------


def load(ctx: Context, pos_id: str) -> Position | None:
    doc = ctx.store.get(POSITIONS, pos_id)
    return None if doc is None else from_doc(doc)


def _open_docs(ctx: Context, symbol: str) -> list[dict]:
    where: dict = {"state": ("in", OPEN_STATES)}
    if symbol:
        where["symbol"] = symbol
    return ctx.store.query(POSITIONS, where, order_by="created_at")


def open_positions(ctx: Context, symbol: str = "") -> list[Position]:
    """Every ACTIVE / PENDING_CLOSING futures position (of ``symbol``), oldest first."""
    return [p for p in (from_doc(d) for d in _open_docs(ctx, symbol)) if p.market == "FUT"]


def open_briefs(ctx: Context, symbol: str = "") -> list[Brief]:
    """``open_positions`` as ``Brief``s: what the fan-outs need, without decoding every position."""
    return [b for b in (brief(d) for d in _open_docs(ctx, symbol)) if b.market == "FUT"]


def create(ctx: Context, pos: Position) -> Position:
    """Insert a new position at version 1 (nothing happens if it exists); returns what is stored."""
    now = ctx.now_ms()
    ctx.store.insert_if_absent(POSITIONS, pos.pos_id, to_doc(replace(pos, version=1, created_at=now, updated_at=now)))
    return load(ctx, pos.pos_id)


def save(ctx: Context, old: Position, new: Position) -> Position:
    """Write ``new`` if the stored position is still ``old`` (compare-and-set on ``version``)."""
    if new == old:
        return old
    new = replace(new, version=old.version + 1, updated_at=ctx.now_ms())
    # version 0: a document written without one (by hand, or before versions): compare on its absence.
    expect = {"version": old.version or None}
    if not ctx.store.update_if(POSITIONS, old.pos_id, to_doc(new), expect):
        raise Conflict(f"position {old.pos_id} changed under us (version {old.version})")
    return new


def moved(pos: Position, event: PositionEventKind, **changes) -> Position:
    """The position after ``event`` (POSITION_FSM), not yet written."""
    try:
        state = POSITION_FSM.transition(pos.state, event)
    except IllegalTransition as exc:
        raise PermanentError(f"position {pos.pos_id}: {exc}") from exc
    return replace(pos, state=state, **changes)


def retrying(handler: Callable[[Envelope, Context], Out]) -> Callable[[Envelope, Context], Out]:
    """Run ``handler`` again on a lost compare-and-set: it re-reads the position and decides afresh, and
    nothing was published yet (orders are returned, not sent)."""
    def run(env: Envelope, ctx: Context) -> Out:
        for _ in range(CONFLICT_TRIES - 1):
            try:
                return handler(env, ctx)
            except Conflict:
                continue
        return handler(env, ctx)  # the last Conflict leaves the entry pending for a redelivery

    run.__name__ = getattr(handler, "__name__", "run")
    run.__doc__ = handler.__doc__
    return run


def snapshot(ctx: Context, pos: Position, why: str, **extra: str) -> None:
    """``positions_snapshots/<pos_id>:<why>``: the position as it was at a moment worth keeping."""
    ctx.store.upsert(POSITIONS_SNAPSHOTS, f"{pos.pos_id}:{why}",
                     {**to_doc(pos), **extra, "why": why, "ts": ctx.now_ms()})


def event(pos: Position, kind: str, tag: str = "", **kw) -> Emit:
    ev = PositionChanged(pos_id=pos.pos_id, kind=kind, symbol=pos.symbol, side=pos.side, qty=pos.qty,
                         state=pos.state.value, entry_price=pos.entry_price, intent_id=pos.entry_intent_id, **kw)
    return Emit(keys.POS_EVENTS, ev, f"pos:{pos.pos_id}:{kind}:{tag or kw.get('sl_price', '')}",
                account_id=pos.account_id)


# --- orders for a position -------------------------------------------------------------------------


def submit(intent: OrderIntent) -> Emit:
    return Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent.intent_id, intent.account_id or "main")


def market_intent(pos: Position, suffix: str, qty: Decimal, purpose: str, *, reduce: bool) -> OrderIntent:
    """A MARKET order for this position: ``<pos_id>:<suffix>`` makes a repeated decision the same intent."""
    return OrderIntent(intent_id=f"{pos.pos_id}:{suffix}", market="FUT", symbol=pos.symbol,
                       side=pos.close_side if reduce else pos.side, qty=qty, exec_policy="MARKET",
                       purpose=purpose, reduce_only=reduce, pos_id=pos.pos_id, parent_intent_id=pos.entry_intent_id,
                       account_id=pos.account_id)


def filters(ctx: Context, symbol: str) -> Filters:
    return venue(ctx).fut.filters(symbol)


# --- the risk port (kill switch, health, regime, budget) ------------------------------------------


def risk(ctx: Context) -> Any:
    """The risk port (``chimera.risk.state``): the context's typed port where the runtime gives one."""
    port = getattr(ctx, "risk", None)
    return port if port is not None else state_for(ctx)


def kill_mode(ctx: Context, account_id: str = "main") -> str | None:
    """The mode (HALT_NEW, REDUCE_ONLY, FLATTEN, ...) of the switch binding ``account_id`` (global or its own)."""
    state = risk(ctx).effective_kill_switch(account_id)
    return state.mode if state else None
