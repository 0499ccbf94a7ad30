"""S6: protect every futures entry at the exchange the moment it fills, and close positions cleanly.

Consumes ``ord:{results}`` (S4's outcomes) and ``pos:{commands}`` (management ticks). Every action
on a position runs under ``lock:{pos}:<pos_id>`` (the spec's lock scope). Orders go to S4 as
``SubmitOrder``/``CancelOrder`` on ``ord:{commands}`` with intent ids derived from the pos_id and
the stop level, so a redelivered result never produces a second stop.
"""

from __future__ import annotations

import json
from decimal import Decimal

from loguru import logger

from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import (
    CancelOrder,
    ManagePositions,
    OrderIntent,
    OrderResult,
    PositionEvent,
    SubmitOrder,
    VenueReport,
)
from chimera.schemas.states import POSITION_FSM, IllegalTransition
from chimera.schemas.states import PositionEvent as PE
from chimera.schemas.states import PositionStatus as P
from chimera.schemas.strategy import decode_kill_switch
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.errors import NotYetImplemented, PermanentError, RetryableError
from chimera.workers.handler import Context

POSITIONS = "positions"
SNAPSHOTS = "positions_snapshots"
CLOSING_PURPOSES = {"STOP", "EXIT", "FLATTEN", "TAKE_PROFIT"}


def pos_id_of(res: OrderResult) -> str:
    return res.pos_id or res.intent_id


def handle(env: Envelope, ctx: Context) -> list[Emit]:
    p = env.payload
    if isinstance(p, OrderResult):
        return on_result(env, ctx, p)
    if isinstance(p, ManagePositions):
        return on_tick(env, ctx, p)
    if isinstance(p, VenueReport):
        return on_venue_report(env, ctx, p)
    return []


def _param(ctx: Context, name: str, default):
    nested = ctx.config.get("positions") or {}
    v = ctx.config.get(f"positions.{name}", nested.get(name, default) if isinstance(nested, dict) else default)
    return type(default)(v)


def _move(ctx: Context, pos: dict, event: PE, patch: dict | None = None) -> dict:
    cur = P(pos["state"])
    try:
        new = POSITION_FSM.transition(cur, event)
    except IllegalTransition as exc:
        raise PermanentError(f"position {pos['_key']}: {exc}") from exc
    patch = {**(patch or {}), "state": new.value, "updated_at": ctx.now_ms()}
    if not ctx.store.update_if(POSITIONS, pos["_key"], patch, {"state": cur.value}):
        raise RetryableError(f"position {pos['_key']} changed under us")
    return {**pos, **patch}


def _snapshot(ctx: Context, pos: dict, why: str) -> None:
    ctx.store.upsert(SNAPSHOTS, f"{pos['_key']}:{why}", {**{k: v for k, v in pos.items() if k != "_key"},
                                                         "pos_id": pos["_key"], "why": why, "ts": ctx.now_ms()})


def _event(pos: dict, kind: str, **kw) -> Emit:
    ev = PositionEvent(pos_id=pos["_key"], kind=kind, symbol=pos["symbol"], side=pos["side"],
                       qty=Decimal(pos["qty"]), state=pos["state"],
                       entry_price=Decimal(pos["entry_price"]) if pos.get("entry_price") else None,
                       intent_id=pos.get("entry_intent_id", ""), **kw)
    return Emit(keys.POS_EVENTS, ev, f"pos:{pos['_key']}:{kind}:{kw.get('sl_price', '')}")


def stop_price_for(ctx: Context, intent: dict, side: str, entry: Decimal) -> Decimal:
    if intent.get("sl_price"):
        return Decimal(str(intent["sl_price"]))
    pct = Decimal(str(_param(ctx, "default_sl_pct", 0.01)))
    return entry * (1 - pct) if side == "BUY" else entry * (1 + pct)


def on_result(env: Envelope, ctx: Context, res: OrderResult) -> list[Emit]:
    intent = ctx.store.get("order_intents", res.intent_id) or {}
    if intent.get("market", "FUT") != "FUT":
        return []  # spot protection is S4's OCO/guard path
    if res.purpose in ("ENTRY", "ADD") and res.status in ("FILLED", "PARTIALLY_FILLED") and res.filled_qty > 0:
        return on_entry_fill(ctx, res, intent)
    if res.purpose == "STOP" and res.status in ("ACCEPTED", "TRIGGERED"):
        pos = ctx.store.get(POSITIONS, pos_id_of(res))
        if pos is None:
            return []
        return [_event(pos, "SL_ARMED", sl_price=Decimal(pos["sl_price"]))]
    if res.purpose in CLOSING_PURPOSES and res.status == "FILLED":
        return on_close_fill(ctx, res)
    return []


def on_entry_fill(ctx: Context, res: OrderResult, intent: dict) -> list[Emit]:
    pos_id = pos_id_of(res)
    entry = res.avg_price or Decimal(0)
    sl = stop_price_for(ctx, intent, res.side or "BUY", entry)
    ctx.store.insert_if_absent(POSITIONS, pos_id, {
        "symbol": res.symbol, "side": res.side, "qty": "0", "entry_price": None, "state": P.PENDING_ENTRY.value,
        "entry_intent_id": res.intent_id, "sl_level": 0, "sl_price": str(sl), "created_at": ctx.now_ms(),
        "updated_at": ctx.now_ms()})
    pos = ctx.store.get(POSITIONS, pos_id)
    if pos["state"] == P.PENDING_ENTRY.value:
        pos = _move(ctx, pos, PE.ENTRY_FILLED, {"qty": str(res.filled_qty), "entry_price": str(entry), "sl_level": 1})
        _snapshot(ctx, pos, "opened")
    out = [_event(pos, "OPENED")]
    # The exchange-side stop, immediately: reduce-only STOP_MARKET on the mark price (S4 run_stop).
    sl_intent = f"{pos_id}:sl1"
    stop = OrderIntent(intent_id=sl_intent, market="FUT", symbol=res.symbol,
                       side="SELL" if res.side == "BUY" else "BUY", qty=Decimal(pos["qty"]), exec_policy="STOP",
                       purpose="STOP", stop_price=Decimal(pos["sl_price"]), reduce_only=True, pos_id=pos_id,
                       parent_intent_id=res.intent_id)
    if ctx.redis is not None:
        ctx.redis.set(keys.pos_sl_level(pos_id), json.dumps({"level": 1, "price": pos["sl_price"], "intent_id": sl_intent}))
        ctx.redis.sadd(keys.POS_ACTIVE, pos_id)
    out.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=stop), sl_intent))
    return out


def on_close_fill(ctx: Context, res: OrderResult) -> list[Emit]:
    return close_position(ctx, ctx.store.get(POSITIONS, pos_id_of(res)), exit_price=res.avg_price,
                          exit_intent_id=res.intent_id, by_stop=res.purpose == "STOP")


def close_position(ctx: Context, pos: dict | None, *, exit_price: Decimal | None, exit_intent_id: str,
                   by_stop: bool, source: str = "result") -> list[Emit]:
    """Flat: POSITION_FSM → CLOSED, snapshot, S3 budget released, stop cancelled unless it is what
    filled, pos keys removed, PositionEvent EXIT. Idempotent (a CLOSED position returns nothing)."""
    if pos is None or pos["state"] in (P.CLOSED.value,):
        return []
    pos = _move(ctx, pos, PE.POSITION_CLOSED, {"exit_price": None if exit_price is None else str(exit_price),
                                               "exit_intent_id": exit_intent_id, "closed_by": source})
    _snapshot(ctx, pos, "closed")
    out: list[Emit] = []
    release_budget(ctx, pos)
    level = ctx.redis.get(keys.pos_sl_level(pos["_key"])) if ctx.redis is not None else None
    if level and not by_stop:
        # Closed by something else than the stop: the stop must not stay armed at the venue.
        sl_intent = json.loads(level)["intent_id"]
        out.append(Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=sl_intent, symbol=pos["symbol"], reason="position closed"),
                        f"cancel:{sl_intent}"))
    if ctx.redis is not None:
        ctx.redis.delete(keys.pos_sl_level(pos["_key"]), keys.pos_tp_ladder(pos["_key"]), keys.pos_adds(pos["_key"]))
        ctx.redis.srem(keys.POS_ACTIVE, pos["_key"])
    out.append(_event(pos, "EXIT", exit_price=exit_price))
    return out


def _order_of(ctx: Context, client_order_id: str) -> dict | None:
    rows = ctx.store.query("orders", {"client_order_id": client_order_id}, limit=1)
    return rows[0] if rows else None


def on_venue_report(env: Envelope, ctx: Context, rep: VenueReport) -> list[Emit]:
    """S1's user data: a reduce-only order of ours (the exchange-side stop, a TP, an exit) FILLED at the
    venue closes the position even though S4 never reported it (S4 does not watch armed stops)."""
    if rep.market != "FUT" or rep.order_status != "FILLED" or rep.exec_type not in ("TRADE", "CALCULATED"):
        return []
    order = _order_of(ctx, rep.client_order_id)
    intent = ctx.store.get("order_intents", order["intent_id"]) if order else None
    if intent is None:
        return []  # not one of Chimera's orders (a manual order is the reconciler's business)
    purpose = intent.get("purpose", "ENTRY")
    if not (intent.get("reduce_only") or purpose in CLOSING_PURPOSES):
        return []
    pos = ctx.store.get(POSITIONS, intent.get("pos_id") or intent["intent_id"])
    if pos is None or pos["state"] == P.CLOSED.value:
        return []
    if rep.cum_qty < Decimal(pos["qty"]):
        logger.warning("position {}: reduce-only fill {} of {} leaves it open; partial closes (REDUCED) are "
                       "not handled yet", pos["_key"], rep.cum_qty, pos["qty"])
        return []
    return close_position(ctx, pos, exit_price=rep.last_price or None, exit_intent_id=intent["intent_id"],
                          by_stop=purpose == "STOP", source=f"venue:{rep.exec_type}:{rep.client_order_id}")


def release_budget(ctx: Context, pos: dict) -> None:
    """Give back S3's margin/concurrency reservation (idempotent per pos_id in S3's script)."""
    try:
        from chimera.handlers.strategy.state import state_for
    except ImportError:  # S3 not present in this build: nothing was reserved
        return
    try:
        state_for(ctx).release(pos["_key"], pos["symbol"])
    except Exception as exc:  # noqa: BLE001 - a wrong-symbol reservation must surface, not block the close
        logger.error("budget release for {} failed: {}", pos["_key"], exc)


def on_tick(env: Envelope, ctx: Context, tick: ManagePositions) -> list[Emit]:
    mode = decode_kill_switch(ctx.redis.get(keys.KILL_SWITCH)).mode if ctx.redis is not None and ctx.redis.get(keys.KILL_SWITCH) else None
    out: list[Emit] = []
    if mode == "FLATTEN":
        for raw in sorted(ctx.redis.smembers(keys.POS_ACTIVE)):
            pos_id = raw.decode() if isinstance(raw, bytes) else raw
            pos = ctx.store.get(POSITIONS, pos_id)
            if pos is None or pos["state"] != P.ACTIVE.value or (tick.symbol and pos["symbol"] != tick.symbol):
                continue
            pos = _move(ctx, pos, PE.CLOSE_REQUESTED)
            iid = f"{pos_id}:flatten"
            out.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=OrderIntent(
                intent_id=iid, market="FUT", symbol=pos["symbol"], side="SELL" if pos["side"] == "BUY" else "BUY",
                qty=Decimal(pos["qty"]), exec_policy="MARKET", purpose="FLATTEN", reduce_only=True, pos_id=pos_id)), iid))
        return out
    if _param(ctx, "trailing_enabled", False):
        raise NotYetImplemented("S6 trailing stop (new stop before cancelling the old) is not implemented yet")
    return out
