"""Position lifecycle in ``strategy_events``: PENDING_ENTRY -> ACTIVE -> PENDING_CLOSING -> CLOSED.

The position document (key ``pos_id``, ``kind=POSITION``) holds ``state`` and ``seq``; every
move is a compare-and-set on both (``store.update_if``) so two workers applying reports
concurrently cannot both win, and each successful move writes one transition document
``<pos_id>:<seq>``. Moves come from POSITION_FSM only: an illegal one is refused, the document
is left untouched, and an Alert goes to ``alerts``. Terminal moves that end the exposure
(FAILED, CLOSED, ROLLED_BACK) release the risk budget; release is idempotent per pos_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chimera.schemas.messages import Alert, OrderResult
from chimera.schemas.states import POSITION_FSM, IllegalTransition, PositionEvent, PositionStatus
from chimera.streams import keys
from chimera.streams.producer import Emit

COLL = "strategy_events"
_RELEASING = frozenset({PositionStatus.FAILED, PositionStatus.CLOSED, PositionStatus.ROLLED_BACK})
_CAS_TRIES = 5


@dataclass
class Moved:
    ok: bool
    state: str | None = None  # state after the call (unchanged when refused)
    emits: list[Emit] = field(default_factory=list)


def open_position(store, *, pos_id: str, signal_id: str, intent_id: str, symbol: str, side: str, market: str,
                  qty: str, margin_usdt: str, now_ms: int, config_rev: int) -> bool:
    doc = {"kind": "POSITION", "pos_id": pos_id, "signal_id": signal_id, "intent_id": intent_id,
           "symbol": symbol, "side": side, "market": market, "qty": qty, "margin_usdt": margin_usdt,
           "state": PositionStatus.PENDING_ENTRY.value, "seq": 0, "created_at": now_ms, "updated_at": now_ms,
           "config_rev": config_rev}
    created = store.insert_if_absent(COLL, pos_id, doc)
    if created:
        store.insert_if_absent(COLL, f"{pos_id}:0", {"kind": "TRANSITION", "pos_id": pos_id, "seq": 0,
                                                      "from": None, "to": doc["state"], "event": "EntryIntent",
                                                      "at": now_ms, "reason": "decision open"})
    return created


def _alert(code: str, message: str, idem: str, **context: str) -> Emit:
    return Emit(keys.ALERTS, Alert(level="ERROR", code=code, message=message, context=context), idem)


def transition(store, risk, pos_id: str, event: PositionEvent, *, now_ms: int, reason: str = "",
               patch: dict | None = None, cause: str = "") -> Moved:
    """Apply ``event``; refuse (with an Alert) what POSITION_FSM does not allow."""
    for _ in range(_CAS_TRIES):
        doc = store.get(COLL, pos_id)
        if doc is None:
            return Moved(False, None, [_alert("UNKNOWN_POSITION", f"{event} for unknown position {pos_id}",
                                              f"unknown:{pos_id}:{event}:{cause}", pos_id=pos_id, event=str(event))])
        state = PositionStatus(doc["state"])
        try:
            target = POSITION_FSM.transition(state, event)
        except IllegalTransition as exc:
            return Moved(False, state.value, [_alert(
                "ILLEGAL_TRANSITION", str(exc), f"illegal:{pos_id}:{state}:{event}:{cause}",
                pos_id=pos_id, state=state.value, event=str(event), symbol=doc.get("symbol", ""))])
        if target == state:  # a reviewed self-loop: a late or repeated report, nothing to write
            return Moved(True, state.value)
        seq = int(doc.get("seq", 0)) + 1
        update = {**(patch or {}), "state": target.value, "seq": seq, "updated_at": now_ms}
        if reason and target in _RELEASING:
            update["close_reason"] = reason
        if store.update_if(COLL, pos_id, update, {"state": state.value, "seq": seq - 1}):
            store.insert_if_absent(COLL, f"{pos_id}:{seq}", {
                "kind": "TRANSITION", "pos_id": pos_id, "seq": seq, "from": state.value, "to": target.value,
                "event": str(event), "at": now_ms, "reason": reason, "cause": cause})
            if target in _RELEASING:
                risk.release(pos_id, doc["symbol"])
                if reason == "STOP_LOSS":
                    note_stop_loss(store, doc["symbol"], now_ms)
            return Moved(True, target.value)
    raise RuntimeError(f"position {pos_id}: compare-and-set lost {_CAS_TRIES} times in a row")


def note_stop_loss(store, symbol: str, at_ms: int) -> None:
    key = f"cooldown:{symbol}"
    prev = store.get(COLL, key)
    if prev is None or prev.get("last_sl_at", 0) < at_ms:
        store.upsert(COLL, key, {"kind": "COOLDOWN", "symbol": symbol, "last_sl_at": at_ms})


def last_stop_loss(store, symbol: str) -> int | None:
    doc = store.get(COLL, f"cooldown:{symbol}")
    return doc.get("last_sl_at") if doc else None


# --- the calls S6 / S5 make -----------------------------------------------------------------------


def request_close(store, risk, pos_id: str, *, now_ms: int, reason: str = "") -> Moved:
    return transition(store, risk, pos_id, PositionEvent.CLOSE_REQUESTED, now_ms=now_ms, reason=reason)


def close_position(store, risk, pos_id: str, *, now_ms: int, reason: str) -> Moved:
    """Flat: our exit, an exchange SL/TP, liquidation or reconciled. ``reason=STOP_LOSS`` starts the cooldown."""
    return transition(store, risk, pos_id, PositionEvent.POSITION_CLOSED, now_ms=now_ms, reason=reason)


def release_budget(risk, pos_id: str, symbol: str) -> bool:
    """Free a reservation directly (S5 cleaning a leftover without a position document)."""
    return risk.release(pos_id, symbol)


# --- S4 results -------------------------------------------------------------------------------------

_FAILED = frozenset({"REJECTED", "EXPIRED", "CANCELED"})
_EXIT_REASON = {"STOP": "STOP_LOSS", "TAKE_PROFIT": "TAKE_PROFIT", "EXIT": "EXIT", "FLATTEN": "FLATTEN"}


def find_position(store, res: OrderResult) -> str | None:
    if res.pos_id and store.get(COLL, res.pos_id):
        return res.pos_id
    hits = store.query(COLL, {"kind": "POSITION", "intent_id": res.intent_id}, limit=1)
    return hits[0]["pos_id"] if hits else None


def on_order_result(store, risk, res: OrderResult, *, now_ms: int, cause: str) -> list[Emit]:
    pos_id = find_position(store, res)
    if pos_id is None:
        return []  # not an S3 position (manual order, another strategy): nothing to track
    filled = res.filled_qty > 0
    if res.purpose == "ENTRY":
        if res.status in ("FILLED", "PARTIALLY_FILLED") or (res.status in _FAILED and filled):
            patch = {"entry_price": str(res.avg_price) if res.avg_price is not None else None,
                     "filled_qty": str(res.filled_qty)}
            return transition(store, risk, pos_id, PositionEvent.ENTRY_FILLED, now_ms=now_ms, patch=patch,
                              reason=res.status, cause=cause).emits
        if res.status in _FAILED:
            return transition(store, risk, pos_id, PositionEvent.ENTRY_FAILED, now_ms=now_ms,
                              reason=f"{res.status}: {res.reason}".strip(": "), cause=cause).emits
        return []
    if res.purpose in _EXIT_REASON:
        if res.status == "FILLED":
            return transition(store, risk, pos_id, PositionEvent.POSITION_CLOSED, now_ms=now_ms,
                              reason=_EXIT_REASON[res.purpose], patch={"exit_price": str(res.avg_price)},
                              cause=cause).emits
        if res.status == "PARTIALLY_FILLED":
            return transition(store, risk, pos_id, PositionEvent.POSITION_REDUCED, now_ms=now_ms, cause=cause).emits
        # A canceled protective STOP/TP is routine (its sibling filled); only a failed close matters.
        if res.status in _FAILED and res.purpose in ("EXIT", "FLATTEN") and not filled:
            return transition(store, risk, pos_id, PositionEvent.CLOSE_FAILED, now_ms=now_ms,
                              reason=res.status, cause=cause).emits
    return []
