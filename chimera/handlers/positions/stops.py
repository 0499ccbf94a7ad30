"""The exchange-side stop of a position: never an unprotected moment, never two stops for one level.

State in ``pos:{sl}:level:<pos_id>`` (JSON): the armed stop (``level``, ``intent_id``, ``price``,
``qty``), ``n`` the last level number used, ``pending`` the stop in flight, ``retired`` the stops
replaced and being cancelled, ``refused`` the last stop the venue turned down.

``reconcile`` compares what the position needs (``sl_price`` on the document, its ``qty``) with what
is armed. A difference places the NEXT level ``<pos_id>:sl<n+1>`` (reduce-only STOP_MARKET on the
mark price, via S4) as ``pending``; the old stop is cancelled only when S4 reports the new one
ACCEPTED (``on_result``). At most one stop is in flight: while ``pending`` is set nothing new is
placed, the pending command is only sent again (same intent id: S4 answers a duplicate with its
stored result), so a redelivered tick or result cannot create a second stop. A refused stop leaves
the armed one in place; the same refused stop is tried again after ``positions.sl_retry_ms``.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.positions.common import (
    OPEN_STATES,
    close_side,
    dec,
    event,
    load_state,
    market_intent,
    move,
    param,
    save,
    save_state,
    snapshot,
    submit,
)
from chimera.schemas.messages import CancelOrder, OrderIntent, OrderResult
from chimera.schemas.states import PositionEvent as PE
from chimera.schemas.states import PositionStatus as P
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

ARMED = ("ACCEPTED", "TRIGGERED")
GONE = ("REJECTED", "CANCELED", "EXPIRED")
WOULD_TRIGGER = "-2021"  # the venue's "Order would immediately trigger": price is already through it


def state(ctx: Context, pos_id: str) -> dict:
    st = {"level": 0, "intent_id": "", "price": None, "qty": None, "n": 0, "pending": None, "retired": [],
          "refused": None, **(load_state(ctx, keys.pos_sl_level(pos_id)) or {})}
    st["n"] = max(int(st["n"]), int(st["level"]))  # a record from before levels were counted
    return st


def live_intents(st: dict) -> list[str]:
    """Every stop intent that may still rest at the venue."""
    out = [st["intent_id"]] if st.get("intent_id") else []
    if st.get("pending"):
        out.append(st["pending"]["intent_id"])
    return out + [i for i in st.get("retired", []) if i not in out]


def cancel(pos: dict, intent_id: str, why: str) -> Emit:
    return Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=intent_id, symbol=pos["symbol"], reason=why),
                f"cancel:{intent_id}")


def _intent(pos: dict, p: dict) -> OrderIntent:
    return OrderIntent(intent_id=p["intent_id"], market="FUT", symbol=pos["symbol"], side=close_side(pos),
                       qty=Decimal(p["qty"]), exec_policy="STOP", purpose="STOP", stop_price=Decimal(p["price"]),
                       reduce_only=True, pos_id=pos["_key"], parent_intent_id=pos.get("entry_intent_id", ""))


def reconcile(ctx: Context, pos: dict) -> list[Emit]:
    """Place the stop the position needs now, or send the one in flight again."""
    if pos["state"] not in OPEN_STATES:
        return []
    st = state(ctx, pos["_key"])
    if st["pending"]:
        return [submit(_intent(pos, st["pending"]))]
    price, qty = dec(pos.get("sl_price")), Decimal(pos["qty"])
    if price is None or qty <= 0:
        return []
    if st["intent_id"] and st["qty"] is not None and (Decimal(st["price"]), Decimal(st["qty"])) == (price, qty):
        return []
    refused = st.get("refused")
    if refused and (Decimal(refused["price"]), Decimal(refused["qty"])) == (price, qty) and \
            ctx.now_ms() - int(refused["at"]) < param(ctx, "sl_retry_ms", 30_000):
        return []
    n = int(st["n"]) + 1
    st["pending"] = {"n": n, "intent_id": f"{pos['_key']}:sl{n}", "price": str(price), "qty": str(qty),
                     "at": ctx.now_ms()}
    st["n"] = n
    save_state(ctx, keys.pos_sl_level(pos["_key"]), st)
    return [submit(_intent(pos, st["pending"]))]


def on_result(ctx: Context, pos: dict, res: OrderResult) -> list[Emit]:
    """S4's answer for one of this position's stops (placement, or cancel of a replaced one)."""
    st = state(ctx, pos["_key"])
    key = keys.pos_sl_level(pos["_key"])
    iid = res.intent_id
    pending = st.get("pending")
    if pending and iid == pending["intent_id"]:
        if res.status in ARMED:
            return _promote(ctx, pos, st, pending)
        if res.status in GONE:
            return _refused(ctx, pos, st, pending, res)
        return []
    if iid == st.get("intent_id"):
        if res.status in ARMED:  # a repeated answer: finish what the first delivery started
            return [cancel(pos, old, f"replaced by {iid}") for old in st.get("retired", [])] + \
                [event(pos, "SL_ARMED", sl_price=Decimal(st["price"]), tag=iid)]
        if res.status in GONE:  # the armed stop is no longer at the venue (cancelled outside S6)
            logger.warning("position {}: armed stop {} is {} ({}); placing a new one", pos["_key"], iid,
                           res.status, res.reason)
            st.update(level=0, intent_id="", price=None, qty=None)
            save_state(ctx, key, st)
            return reconcile(ctx, pos)
        return []
    if iid in st.get("retired", []):
        if res.status in ARMED:
            return [cancel(pos, iid, "replaced")]
        st["retired"] = [i for i in st["retired"] if i != iid]
        save_state(ctx, key, st)
    return []


def _promote(ctx: Context, pos: dict, st: dict, new: dict) -> list[Emit]:
    old = st.get("intent_id")
    st.update(level=new["n"], intent_id=new["intent_id"], price=new["price"], qty=new["qty"], pending=None,
              refused=None)
    if old:
        st["retired"] = [*st.get("retired", []), old]
    save_state(ctx, keys.pos_sl_level(pos["_key"]), st)
    pos = save(ctx, pos, {"sl_level": new["n"], "sl_armed_price": new["price"], "sl_armed_qty": new["qty"]})
    snapshot(ctx, pos, f"sl{new['n']}")
    price = Decimal(new["price"])
    out = [event(pos, "SL_ARMED", sl_price=price, tag=new["intent_id"])]
    if old:
        out += [event(pos, "TRAIL_MOVED", sl_price=price, tag=new["intent_id"]),
                cancel(pos, old, f"replaced by {new['intent_id']}")]
    return out + reconcile(ctx, pos)  # the position may have changed while the stop was in flight


def _refused(ctx: Context, pos: dict, st: dict, p: dict, res: OrderResult) -> list[Emit]:
    st["pending"] = None
    st["refused"] = {"price": p["price"], "qty": p["qty"], "at": ctx.now_ms(), "reason": res.reason}
    save_state(ctx, keys.pos_sl_level(pos["_key"]), st)
    if st.get("intent_id"):
        logger.warning("position {}: new stop {} refused ({}); the armed {} stays", pos["_key"], p["intent_id"],
                       res.reason, st["intent_id"])
        return []
    if WOULD_TRIGGER in res.reason and pos["state"] == P.ACTIVE.value:
        # No stop armed and the price is already through it: get out now rather than stay unprotected.
        logger.error("position {}: stop {} would trigger at once; closing at market", pos["_key"], p["intent_id"])
        pos = move(ctx, pos, PE.CLOSE_REQUESTED)
        return [submit(market_intent(pos, f"exit-sl{p['n']}", Decimal(pos["qty"]), "EXIT", reduce=True))]
    logger.error("position {}: stop {} refused ({}) and none armed; retrying in positions.sl_retry_ms",
                 pos["_key"], p["intent_id"], res.reason)
    return []
