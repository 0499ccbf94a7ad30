"""What every S6 module shares: the position document, its snapshots and events, bundle parameters,
the small JSON state kept in Redis, the per-position lock and the venue client.

The position document (``positions/<pos_id>``) holds the position as S6 books it: ``qty`` and
``entry_price`` (average) move with every entry/add/reduce fill; ``fills_in`` (intent → [qty, notional])
and ``fills_out`` (client order id → cumulative qty) make every fill count once however often its
result or report is delivered. ``sl_price`` is the stop the position *should* have; what is armed at
the venue is tracked in ``pos:{sl}:level:<pos_id>`` (see ``stops.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.common import dec, venue
from chimera.schemas.messages import OrderIntent, PositionEvent, SubmitOrder
from chimera.schemas.states import POSITION_FSM, IllegalTransition
from chimera.schemas.states import PositionEvent as PE
from chimera.schemas.states import PositionStatus as P
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context
from chimera.workers.locks import Lock

POSITIONS = "positions"
SNAPSHOTS = "positions_snapshots"
OPEN_STATES = (P.ACTIVE.value, P.PENDING_CLOSING.value)
ZERO = Decimal(0)


def direction(pos: dict) -> int:
    return 1 if pos["side"] == "BUY" else -1


def close_side(pos: dict) -> str:
    return "SELL" if pos["side"] == "BUY" else "BUY"


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


# --- the document, snapshots, events ------------------------------------------------------------------


def save(ctx: Context, pos: dict, patch: dict) -> dict:
    """Write ``patch`` if the position is still in the state we read (all writers hold its lock)."""
    patch = {**patch, "updated_at": ctx.now_ms()}
    if not ctx.store.update_if(POSITIONS, pos["_key"], patch, {"state": pos["state"]}):
        raise RetryableError(f"position {pos['_key']} changed under us")
    return {**pos, **patch}


def move(ctx: Context, pos: dict, event: PE, patch: dict | None = None) -> dict:
    cur = P(pos["state"])
    try:
        new = POSITION_FSM.transition(cur, event)
    except IllegalTransition as exc:
        raise PermanentError(f"position {pos['_key']}: {exc}") from exc
    return save(ctx, pos, {**(patch or {}), "state": new.value})


def snapshot(ctx: Context, pos: dict, why: str) -> None:
    body = {k: v for k, v in pos.items() if k != "_key"}
    ctx.store.upsert(SNAPSHOTS, f"{pos['_key']}:{why}", {**body, "pos_id": pos["_key"], "why": why, "ts": ctx.now_ms()})


def event(pos: dict, kind: str, tag: str = "", **kw) -> Emit:
    ev = PositionEvent(pos_id=pos["_key"], kind=kind, symbol=pos["symbol"], side=pos["side"],
                       qty=Decimal(pos["qty"]), state=pos["state"], entry_price=dec(pos.get("entry_price")),
                       intent_id=pos.get("entry_intent_id", ""), **kw)
    return Emit(keys.POS_EVENTS, ev, f"pos:{pos['_key']}:{kind}:{tag or kw.get('sl_price', '')}")


def submit(intent: OrderIntent) -> Emit:
    return Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent.intent_id)


def market_intent(pos: dict, suffix: str, qty: Decimal, purpose: str, *, reduce: bool) -> OrderIntent:
    """A MARKET order for this position: ``<pos_id>:<suffix>`` makes a repeated decision the same intent."""
    return OrderIntent(intent_id=f"{pos['_key']}:{suffix}", market="FUT", symbol=pos["symbol"],
                       side=close_side(pos) if reduce else pos["side"], qty=qty, exec_policy="MARKET",
                       purpose=purpose, reduce_only=reduce, pos_id=pos["_key"],
                       parent_intent_id=pos.get("entry_intent_id", ""))


# --- small JSON state in Redis (in-memory under the in-process runtime) ---------------------------


def load_state(ctx: Context, key: str) -> dict | None:
    if ctx.redis is None:
        return ctx.services.setdefault("s6_state", {}).get(key)
    raw = ctx.redis.get(key)
    return None if raw is None else json.loads(raw)


def save_state(ctx: Context, key: str, value: dict) -> None:
    if ctx.redis is None:
        ctx.services.setdefault("s6_state", {})[key] = value
    else:
        ctx.redis.set(key, json.dumps(value))


def drop_state(ctx: Context, *names: str) -> None:
    if ctx.redis is None:
        for n in names:
            ctx.services.setdefault("s6_state", {}).pop(n, None)
    else:
        ctx.redis.delete(*names)


@contextlib.contextmanager
def position_lock(ctx: Context, pos_id: str) -> Iterator[None]:
    """``lock:{pos}:<pos_id>`` for paths whose message does not name the position (venue reports)."""
    if ctx.redis is None:
        yield
        return
    ttl = getattr(ctx.settings, "lock_ttl_ms", 10_000)
    lock = Lock(ctx.redis, keys.lock_pos(pos_id), ttl)
    # A holder keeps it for one handler call at most: waiting that long avoids counting a failure.
    if not lock.acquire(wait_ms=min(ttl, 5000)):
        raise RetryableError(f"position {pos_id} is busy")
    try:
        yield
    finally:
        lock.release()


# --- venue -----------------------------------------------------------------------------------------


def filters(ctx: Context, symbol: str) -> Filters:
    return venue(ctx).fut.filters(symbol)
