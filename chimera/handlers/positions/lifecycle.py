"""A position's size over its life: entry and add fills grow it, reduce-only fills shrink it, the
last one closes it. Every change re-checks the exchange-side stop (``stops.reconcile``), so the stop
follows the qty: new stop for the new qty first, old one cancelled once the new one is ACCEPTED.

Fills count once however often they are delivered: entries/adds by intent (``fills_in``: the
intent's cumulative qty and notional), reductions by exchange order (``fills_out``: the order's
cumulative qty), which is what both S4's results (via its ``orders`` documents) and S1's venue
reports carry, so a report and a result for the same fill reduce the position once.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.positions import adds, stops
from chimera.handlers.positions.common import (
    OPEN_STATES,
    POSITIONS,
    ZERO,
    dec,
    direction,
    drop_state,
    event,
    filters,
    load_state,
    move,
    param,
    snapshot,
)
from chimera.handlers.positions.multipliers import current as multipliers
from chimera.handlers.positions.tick import ensure_scheduled
from chimera.schemas.messages import OrderResult
from chimera.schemas.states import PositionEvent as PE
from chimera.schemas.states import PositionStatus as P
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context


def pos_id_of(res: OrderResult) -> str:
    return res.pos_id or res.intent_id


def stop_price_for(ctx: Context, intent: dict, side: str, entry: Decimal) -> Decimal:
    """The intent's ``sl_price``, else entry ∓ ``positions.default_sl_pct`` × the stop multiplier."""
    if intent.get("sl_price"):
        return Decimal(str(intent["sl_price"]))
    pct = param(ctx, "default_sl_pct", Decimal("0.01")) * multipliers(ctx).stop
    raw = entry * (1 - pct) if side == "BUY" else entry * (1 + pct)
    return filters(ctx, intent["symbol"]).price(raw, side, passive=True)


# --- growth: entry and add fills ----------------------------------------------------------------------


def grow(ctx: Context, res: OrderResult, intent: dict) -> list[Emit]:
    pos_id = pos_id_of(res)
    ctx.store.insert_if_absent(POSITIONS, pos_id, {
        "symbol": res.symbol, "side": res.side, "qty": "0", "entry_price": None, "state": P.PENDING_ENTRY.value,
        "entry_intent_id": res.intent_id, "sl_level": 0, "sl_price": None, "fills_in": {}, "fills_out": {},
        "created_at": ctx.now_ms(), "updated_at": ctx.now_ms()})
    pos = ctx.store.get(POSITIONS, pos_id)
    if pos["state"] not in (P.PENDING_ENTRY.value, *OPEN_STATES):
        return []
    seen_qty, seen_notional = (Decimal(x) for x in (pos.get("fills_in") or {}).get(res.intent_id, ("0", "0")))
    dq = res.filled_qty - seen_qty
    if dq <= 0 or res.avg_price is None:
        # Already booked (a redelivery, maybe after a crash mid-way): redo the idempotent rest.
        if pos["state"] not in OPEN_STATES:
            return []
        activate(ctx, pos)
        again = [event(pos, "OPENED")] if res.intent_id == pos.get("entry_intent_id") else []
        return _then_add_done(ctx, res, again + stops.reconcile(ctx, pos))
    notional = res.filled_qty * res.avg_price
    qty = Decimal(pos["qty"]) + dq
    entry = (Decimal(pos["qty"]) * (dec(pos.get("entry_price")) or ZERO) + notional - seen_notional) / qty
    if pos["state"] == P.PENDING_ENTRY.value:  # nothing booked yet: qty == dq == res.filled_qty
        sl = stop_price_for(ctx, intent, res.side or "BUY", entry)
        pos = move(ctx, pos, PE.ENTRY_FILLED, opening_fields(res.intent_id, intent, qty, entry, notional, sl))
        snapshot(ctx, pos, "opened")
        activate(ctx, pos)
        out = [event(pos, "OPENED")]
    else:
        fills_in = {**(pos.get("fills_in") or {}), res.intent_id: [str(res.filled_qty), str(notional)]}
        patch = {"qty": str(qty), "entry_price": str(entry), "fills_in": fills_in,
                 "gross_qty": str(Decimal(pos.get("gross_qty") or 0) + dq)}
        pos = move(ctx, pos, PE.ENTRY_FILLED, patch)
        snapshot(ctx, pos, f"grown:{res.intent_id}:{res.filled_qty}")
        out = [event(pos, "ADDED", tag=f"{res.intent_id}:{res.filled_qty}")]
    return _then_add_done(ctx, res, out + stops.reconcile(ctx, pos))


def opening_fields(intent_id: str, intent: dict, qty: Decimal, entry: Decimal | None, notional: Decimal,
                   sl_price: Decimal | None) -> dict:
    """S6's bookkeeping of a position's first fill. The reconciler adopts an entry S6 never booked with
    the same fields, so ``fills_in`` makes S6 count that fill once if its result arrives after all."""
    e = None if entry is None else str(entry)
    return {"qty": str(qty), "entry_price": e, "fills_in": {intent_id: [str(qty), str(notional)]},
            "gross_qty": str(qty), "entry0": e, "base_qty": str(qty), "leverage": int(intent.get("leverage") or 20),
            "sl_price": None if sl_price is None else str(sl_price), "trail_step": 0}


def _then_add_done(ctx: Context, res: OrderResult, out: list[Emit]) -> list[Emit]:
    # The add leaves "in flight" only after the stop for the new qty is (being) placed.
    if res.purpose == "ADD":
        adds.on_result(ctx, pos_id_of(res), res)
    return out


def activate(ctx: Context, pos: dict) -> None:
    """Into the sets the management tick and mark prices fan out over, and the tick armed."""
    if ctx.redis is None:
        return
    ctx.redis.sadd(keys.POS_ACTIVE, pos["_key"])
    ctx.redis.sadd(keys.pos_active_symbol(pos["symbol"]), pos["_key"])
    ensure_scheduled(ctx)


def deactivate(ctx: Context, pos: dict) -> None:
    if ctx.redis is not None:
        ctx.redis.srem(keys.POS_ACTIVE, pos["_key"])
        ctx.redis.srem(keys.pos_active_symbol(pos["symbol"]), pos["_key"])


# --- reduction and close -----------------------------------------------------------------------------------


def reduce(ctx: Context, pos: dict, client_order_id: str, cum_qty: Decimal, price: Decimal | None, *,
           exit_intent_id: str, source: str) -> tuple[dict, list[Emit]]:
    """Book a reduce-only order's cumulative fill: REDUCED or, when flat, CLOSED. The caller then lets
    the stop follow (``stops.reconcile``) while the position is open."""
    fills_out = dict(pos.get("fills_out") or {})
    delta = cum_qty - Decimal(fills_out.get(client_order_id, "0"))
    if delta <= 0:
        return pos, []
    fills_out[client_order_id] = str(cum_qty)
    left = Decimal(pos["qty"]) - delta
    patch: dict = {"fills_out": fills_out}
    if price is not None and pos.get("entry_price"):
        pnl = (price - Decimal(pos["entry_price"])) * min(delta, Decimal(pos["qty"])) * direction(pos)
        patch["realized_pnl"] = str(Decimal(pos.get("realized_pnl") or 0) + pnl)
    if left <= 0:
        out = close_position(ctx, pos, exit_price=price, exit_intent_id=exit_intent_id, source=source, patch=patch)
        return ctx.store.get(POSITIONS, pos["_key"]), out
    pos = move(ctx, pos, PE.POSITION_REDUCED, {**patch, "qty": str(left)})
    snapshot(ctx, pos, f"reduced:{client_order_id}:{cum_qty}")
    return pos, [event(pos, "REDUCED", tag=f"{client_order_id}:{cum_qty}", exit_price=price,
                       realized_pnl=dec(patch.get("realized_pnl")))]


def close_position(ctx: Context, pos: dict | None, *, exit_price: Decimal | None, exit_intent_id: str,
                   source: str = "result", patch: dict | None = None) -> list[Emit]:
    """Flat: POSITION_FSM → CLOSED, snapshot, S3 budget released, every stop still live cancelled except
    the one that filled, pos keys removed, PositionEvent EXIT. A CLOSED position whose keys are still
    there (a crash mid-close) finishes the tail again; otherwise a repeat returns nothing."""
    if pos is None or pos["state"] not in (*OPEN_STATES, P.CLOSED.value):
        return []
    if pos["state"] == P.CLOSED.value:
        if load_state(ctx, keys.pos_sl_level(pos["_key"])) is None:
            return []
        return _close_tail(ctx, pos, exit_intent_id)
    pos = move(ctx, pos, PE.POSITION_CLOSED, {**(patch or {}), "exit_intent_id": exit_intent_id, "closed_by": source,
                                              "exit_price": None if exit_price is None else str(exit_price)})
    snapshot(ctx, pos, "closed")
    release_budget(ctx, pos)
    return _close_tail(ctx, pos, exit_intent_id)


def _close_tail(ctx: Context, pos: dict, exit_intent_id: str) -> list[Emit]:
    st = stops.state(ctx, pos["_key"])
    out = [stops.cancel(pos, iid, "position closed") for iid in stops.live_intents(st) if iid != exit_intent_id]
    drop_state(ctx, keys.pos_sl_level(pos["_key"]), keys.pos_tp_ladder(pos["_key"]), keys.pos_adds(pos["_key"]))
    deactivate(ctx, pos)
    return out + [event(pos, "EXIT", exit_price=dec(pos.get("exit_price")))]


def release_budget(ctx: Context, pos: dict) -> None:
    """Give back S3's margin/concurrency reservation, adds included (idempotent per pos_id in S3's script)."""
    try:
        from chimera.risk.state import state_for
    except ImportError:  # S3 not present in this build: nothing was reserved
        return
    try:
        state_for(ctx).release(pos["_key"], pos["symbol"])
    except Exception as exc:  # noqa: BLE001 - a wrong-symbol reservation must surface, not block the close
        logger.error("budget release for {} failed: {}", pos["_key"], exc)
