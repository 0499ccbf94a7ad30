"""What S3 keeps of a position: its decision (``signals``) and its budget reservation (the risk port).

The position itself is S6's (``positions/<pos_id>``, the one record of it, moved by S6 through
POSITION_FSM; FAILED and CLOSED give the reservation back there). S3 only *reads* it: the cooldown
after a stop loss and the same-direction guard ask ``positions``. ``strategy_events`` is an
append-only audit log: S3 appends what it decided to open and what came back for its entries, and
never reads any of it back as state.
"""

from __future__ import annotations

from chimera.schemas.messages import OrderResult
from chimera.store.collections import POSITIONS, SIGNALS, STRATEGY_EVENTS
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


def same_direction(store, symbol: str, side: str, own: str, account_id: str | None = None) -> str:
    """Another live position (pending entry, open or closing) on ``symbol`` and ``side``: its pos_id, or "".

    With ``account_id`` only that account's positions count: another account's position is not this
    account's exposure (a document from before accounts is main's)."""
    live = store.query(POSITIONS, {"symbol": symbol, "side": side, "state": ("in", LIVE_STATES)},
                       order_by="created_at")
    return next((d["_key"] for d in live if d["_key"] != own
                 and (account_id is None or (d.get("account_id") or "main") == account_id)), "")


# --- S4 results -------------------------------------------------------------------------------------


def on_order_result(store, risk, res: OrderResult, *, now_ms: int, cause: str) -> list[Emit]:
    """Append what came back for S3's entries to the audit log; the position is S6's business."""
    if res.purpose == "ENTRY" and res.status in _ENDED and res.pos_id:
        record(store, "ENTRY_RESULT", f"{res.intent_id}:{res.leg}:{res.status}", {
            "pos_id": res.pos_id, "intent_id": res.intent_id, "status": res.status, "symbol": res.symbol,
            "filled_qty": str(res.filled_qty), "avg_price": None if res.avg_price is None else str(res.avg_price),
            "cause": cause}, now_ms=now_ms)
    return []


# --- account risk (issue #16 item 5): the breaker, max open per account, priority replace -------------

REPLACE_PENDING = "REPLACE_PENDING"  # a decision in wait: never recorded, retried by a timer
REPLACE_RETRY_MS = 1_000
REPLACE_TIMEOUT_MS = 120_000


def account_param(ctx, account_id: str, name: str, default):
    from chimera.risk.breaker import account_section

    return account_section(ctx.config, account_id).get(name, default)


def account_block(ctx, account_id: str, as_of_ms: int, max_open_default: int | None) -> str | None:
    """The account-level guards: the daily drawdown breaker, then max open positions of the account.

    The breaker is the account-risk role's ``account_risk/<account>``; a level recorded for an earlier
    UTC day than the decision's is reset. The open count is S6's live positions of the account
    (``account_risk.max_open_positions``, per account under ``account_risk.accounts.<id>``; default the
    strategy's ``risk.max_open_positions``).
    """
    from chimera.handlers.strategy import guards
    from chimera.risk.breaker import level_for_entry
    from chimera.schemas.documents.account_risk import BreakerDoc, from_doc
    from chimera.store.collections import ACCOUNT_RISK

    doc = from_doc(ctx.store.get(ACCOUNT_RISK, account_id), BreakerDoc)
    blocked = guards.breaker(level_for_entry(doc, as_of_ms))
    if blocked:
        return blocked
    limit = account_param(ctx, account_id, "max_open_positions", max_open_default)
    return guards.max_open_account(open_count(ctx.store, account_id), None if limit is None else int(limit))


def open_count(store, account_id: str) -> int:
    live = store.query(POSITIONS, {"state": ("in", LIVE_STATES)})
    return sum(1 for d in live if (d.get("account_id") or "main") == account_id)


def priority_of(features: dict | None) -> float:
    v = (features or {}).get("priority")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def replace_gate(ctx, old_pos_id: str, features: dict, as_of_ms: int) -> str:
    """Why an entry that found ``old_pos_id`` (same symbol and side, live) does not open now.

    A strictly higher priority (the signal's ``priority`` feature against the older position's signal)
    waits for the older one to be CLOSED: ``REPLACE_PENDING:<old>``, which ``replace_pending`` turns into
    an EXIT of the older position and a retry of this decision. Otherwise ``SAME_DIRECTION_OPEN``; a
    wait longer than ``account_risk.replace_timeout_ms`` ends as ``REPLACE_TIMEOUT``.
    """
    from chimera.handlers.strategy import guards

    old = ctx.store.get(POSITIONS, old_pos_id) or {}
    old_signal = ctx.store.get(SIGNALS, old.get("signal_id") or "") or {}
    if not guards.priority_replace(priority_of(features), priority_of(old_signal.get("features"))):
        return "SAME_DIRECTION_OPEN"
    timeout = int(account_param(ctx, old.get("account_id") or "main", "replace_timeout_ms", REPLACE_TIMEOUT_MS))
    if ctx.now_ms() - as_of_ms > timeout:
        return "REPLACE_TIMEOUT"
    return f"{REPLACE_PENDING}:{old_pos_id}"


def replace_pending(ctx, sig, decision) -> list[Emit] | None:
    """For a ``REPLACE_PENDING`` decision: close the older position, retry this decision later.

    The EXIT is a reduce-only MARKET order through S4 tagged with the older position's account, with a
    deterministic intent id (``<old>:replace``) so every retry addresses the same order; S6 books the
    close from S4's result. The retry is a ``Decide`` timer for the same signal: the decision is only
    recorded once the older position is CLOSED (it opens) or the wait timed out. None: not a wait.
    """

    from chimera.schemas.messages import Decide
    from chimera.streams import keys

    reason = decision.reason or ""
    if decision.action != "skip" or not reason.startswith(REPLACE_PENDING + ":"):
        return None
    signal_id, symbol, side, account_id, now_ms = sig.signal_id, sig.symbol, decision.side, sig.account_id, ctx.now_ms()
    old_id = reason.split(":", 1)[1]
    old = ctx.store.get(POSITIONS, old_id) or {}
    out: list[Emit] = []
    qty = old.get("qty")
    if old.get("state") == "ACTIVE" and qty and float(qty) > 0:
        exit_id = f"{old_id}:replace"
        out.append(exit_command({**old, "_key": old_id}, "replace", signal_id=signal_id))
        record(ctx.store, "REPLACE_REQUESTED", f"{signal_id}:{old_id}", {
            "signal_id": signal_id, "replaces": old_id, "exit_intent_id": exit_id, "symbol": symbol}, now_ms=now_ms)
    due = now_ms + int(account_param(ctx, account_id, "replace_retry_ms", REPLACE_RETRY_MS))
    out.append(Emit(keys.STRAT_COMMANDS, Decide(signal_id=signal_id, symbol=symbol, side=side),
                    f"replace-retry:{signal_id}:{due}", account_id, due_ms=due, timer_key=f"s3:replace:{signal_id}"))
    return out


def exit_command(doc: dict, suffix: str, *, signal_id: str = "", event_time: int | None = None) -> Emit:
    """S3 closing one of its positions (priority replace, exit on the opposite signal): a MARKET ``EXIT``
    intent ``<pos_id>:<suffix>`` for its whole quantity (reduce-only on futures), on the position's
    account. The same id however often the decision is repeated, so S4 sends it once; S6 books it as any
    exit."""
    from decimal import Decimal

    from chimera.schemas.messages import OrderIntent, SubmitOrder
    from chimera.streams import keys

    pos_id, market = doc["_key"], doc.get("market") or "FUT"
    intent = OrderIntent(intent_id=f"{pos_id}:{suffix}", market=market, symbol=doc["symbol"],
                         side="SELL" if doc.get("side") == "BUY" else "BUY", qty=Decimal(str(doc["qty"])),
                         exec_policy="MARKET", purpose="EXIT", reduce_only=market == "FUT", pos_id=pos_id,
                         parent_intent_id=doc.get("entry_intent_id", ""), signal_id=signal_id,
                         leverage=int(doc.get("leverage") or 20), account_id=doc.get("account_id") or "")
    return Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent.intent_id, doc.get("account_id") or "main",
                event_time=event_time)
