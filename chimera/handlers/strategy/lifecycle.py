"""What S3 keeps of a position: its decision (``signals``) and its budget reservation (the risk port).

The position itself is S6's (``positions/<pos_id>``, the one record of it, moved by S6 through
POSITION_FSM; FAILED and CLOSED give the reservation back there). S3 only *reads* it: the cooldown
after a stop loss and the same-direction guard ask ``positions``. ``strategy_events`` is an
append-only audit log: S3 appends what it decided to open and what came back for its entries, and
never reads any of it back as state.
"""

from __future__ import annotations

from chimera.schemas.messages import OrderResult
from chimera.store.collections import POSITIONS, STRATEGY_EVENTS
from chimera.streams.producer import Emit

COLL = STRATEGY_EVENTS
LIVE_STATES = ["PENDING_ENTRY", "ACTIVE", "PENDING_CLOSING"]
_ENDED = frozenset({"FILLED", "PARTIALLY_FILLED", "REJECTED", "EXPIRED", "CANCELED"})


def record(store, kind: str, key: str, body: dict, *, now_ms: int) -> bool:
    """Append ``strategy_events/<kind>:<key>`` once (a redelivery finds it and writes nothing)."""
    return store.insert_if_absent(COLL, f"{kind}:{key}", {"kind": kind, "ts": now_ms, **body})


def record_open(store, *, pos_id: str, signal_id: str, intent_id: str, symbol: str, side: str, market: str,
                qty: str, margin_usdt: str, now_ms: int, config_rev: int) -> bool:
    """The audit of a decision to open (the reservation is already held in the risk port)."""
    return record(store, "OPEN_DECIDED", pos_id, {
        "pos_id": pos_id, "signal_id": signal_id, "intent_id": intent_id, "symbol": symbol, "side": side,
        "market": market, "qty": qty, "margin_usdt": margin_usdt, "config_rev": config_rev}, now_ms=now_ms)


def rollback(store, risk, pos_id: str, symbol: str, *, now_ms: int, reason: str, account_id: str = "main") -> bool:
    """Give back a reservation whose decision ended as a skip (no order was ever sent for it)."""
    freed = risk.release(pos_id, symbol, account_id)
    if freed:
        record(store, "ROLLED_BACK", pos_id, {"pos_id": pos_id, "symbol": symbol, "reason": reason}, now_ms=now_ms)
    return freed


def release_budget(risk, pos_id: str, symbol: str) -> bool:
    """Free a reservation directly (S5 cleaning a leftover without a position document)."""
    return risk.release(pos_id, symbol)


# --- reads of S6's positions --------------------------------------------------------------------------


def last_stop_loss(store, symbol: str) -> int | None:
    """When the newest position on ``symbol`` closed by its stop (the cooldown's start), if any."""
    rows = store.query(POSITIONS, {"symbol": symbol, "close_reason": "STOP_LOSS"}, order_by="closed_at", desc=True,
                       limit=1)
    return int(rows[0]["closed_at"]) if rows and rows[0].get("closed_at") else None


def same_direction(store, symbol: str, side: str, own: str) -> str:
    """Another live position (pending entry, open or closing) on ``symbol`` and ``side``: its pos_id, or ""."""
    live = store.query(POSITIONS, {"symbol": symbol, "side": side, "state": ("in", LIVE_STATES)},
                       order_by="created_at")
    return next((d["_key"] for d in live if d["_key"] != own), "")


# --- S4 results -------------------------------------------------------------------------------------


def on_order_result(store, risk, res: OrderResult, *, now_ms: int, cause: str) -> list[Emit]:
    """Append what came back for S3's entries to the audit log; the position is S6's business."""
    if res.purpose == "ENTRY" and res.status in _ENDED and res.pos_id:
        record(store, "ENTRY_RESULT", f"{res.intent_id}:{res.leg}:{res.status}", {
            "pos_id": res.pos_id, "intent_id": res.intent_id, "status": res.status, "symbol": res.symbol,
            "filled_qty": str(res.filled_qty), "avg_price": None if res.avg_price is None else str(res.avg_price),
            "cause": cause}, now_ms=now_ms)
    return []
