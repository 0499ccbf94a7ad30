"""S1 treasury: ``TransferRequest`` on ``treasury:{commands}`` → one wallet transfer, exactly once.

State machine in ``treasury_transfers/<transfer_id>``: PENDING → EXECUTING → SUCCEEDED | FAILED,
transitions by compare-and-set (``update_if`` on ``state``), under ``lock:{treasury}:<from>:<to>``
(the spec's lock scope, taken by the runtime). Rules:

* the same ``transfer_id`` again: the stored outcome is answered again, nothing is sent;
* refused before sending (FAILED with a clear reason): direction not in the whitelist, amount
  over the per-asset limit, amount not positive. Rules come from the active bundle's
  ``treasury`` section, else ``settings.extra["treasury"]``:
  ``{"limits": {"USDT": "5000"}, "directions": ["MAIN_UMFUTURE", "UMFUTURE_MAIN"]}``; an asset
  without a limit is refused;
* the venue refused (4xx answer): FAILED with its message;
* no answer (timeout, dropped connection, 5xx): UNKNOWN, never re-sent blindly. It is resolved
  from the venue's transfer history (``wallet.find_after`` with the tranId baseline read before
  sending): found → SUCCEEDED; not found → the entry is retried (RetryableError) and the
  history is read again; after ``unknown_resend_after_ms`` with nothing in the history the
  request is deemed never executed and sent again (attempt counted in the document).

Every transition is audited on ``ops:events`` (TRANSFER_<STATE>); the final outcome goes to
``treasury:{results}`` as ``TransferResponse``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from loguru import logger

from chimera.errors import RetryableError
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import OpsEvent, TransferRequest, TransferResponse
from chimera.store.collections import TREASURY_TRANSFERS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance import wallet
from chimera.workers.handler import Context, HandlerSpec, Route

COLL = TREASURY_TRANSFERS
ENDS = {"MAIN_UMFUTURE": ("MAIN", "UMFUTURE"), "UMFUTURE_MAIN": ("UMFUTURE", "MAIN")}


def rules(ctx: Context) -> dict[str, Any]:
    got = ctx.config.get("treasury") if ctx.config is not None else None
    if not got:
        got = (getattr(ctx.settings, "extra", None) or {}).get("treasury") or {}
    return dict(got)


def check(req: TransferRequest, r: dict) -> str | None:
    """The refusal reason, or None when the request may go to the venue."""
    directions = list(r.get("directions") or [])
    if req.direction not in directions:
        return f"direction {req.direction} is not whitelisted (allowed: {', '.join(directions) or 'none'})"
    if req.amount <= 0:
        return f"amount {req.amount} must be positive"
    limits = r.get("limits") or {}
    if req.asset not in limits:
        return f"no transfer limit configured for {req.asset}: refused"
    try:
        limit = Decimal(str(limits[req.asset]))
    except InvalidOperation:
        return f"transfer limit for {req.asset} is not a number: {limits[req.asset]!r}"
    if req.amount > limit:
        return f"amount {req.amount} {req.asset} exceeds the per-transfer limit {limit} {req.asset}"
    return None


def _client(ctx: Context):
    return ctx.venues.wallet("main")  # transfers move the main account's funds between its wallets


def _finish(ctx: Context, req: TransferRequest, doc: dict) -> list[Emit]:
    state = doc["state"]
    result = "SUCCEEDED" if state == "SUCCEEDED" else "FAILED" if state == "FAILED" else "PENDING"
    msg = doc.get("reason", "") or (f"tranId {doc['tran_id']}" if doc.get("tran_id") else "")
    return [
        Emit(keys.OPS_EVENTS, OpsEvent(kind=f"TRANSFER_{state}", actor="s1",
                                       detail={"transfer_id": req.transfer_id, "asset": req.asset,
                                               "amount": str(req.amount), "direction": req.direction,
                                               "message": msg}), f"transfer:{req.transfer_id}:{state}"),
        Emit(keys.TREASURY_RESULTS, TransferResponse(transfer_id=req.transfer_id, result=result, message=msg),
             f"transfer:{req.transfer_id}:result"),
    ]


def _set(ctx: Context, tid: str, expect_state: str, patch: dict) -> dict:
    if not ctx.store.update_if(COLL, tid, {**patch, "updated_at": ctx.now_ms()}, {"state": expect_state}):
        raise RetryableError(f"transfer {tid}: state changed under us (expected {expect_state})")
    return ctx.store.get(COLL, tid)


def on_transfer(env: Envelope, ctx: Context) -> list[Emit]:
    req: TransferRequest = env.payload
    tid = req.transfer_id
    now = ctx.now_ms()
    ctx.store.insert_if_absent(COLL, tid, {
        "transfer_id": tid, "asset": req.asset, "amount": str(req.amount), "direction": req.direction,
        "requested_by": req.requested_by, "reason_requested": req.reason, "state": "PENDING", "attempts": 0,
        "created_at": now, "updated_at": now, "account_id": env.account_id,
    })
    doc = ctx.store.get(COLL, tid)
    if (doc["asset"], Decimal(doc["amount"]), doc["direction"]) != (req.asset, req.amount, req.direction):
        return [Emit(keys.TREASURY_RESULTS, TransferResponse(
            transfer_id=tid, result="FAILED", message="transfer_id reused with different asset/amount/direction"),
            f"transfer:{tid}:conflict:{env.idempotency_key}")]
    if doc["state"] in ("SUCCEEDED", "FAILED"):
        return _finish(ctx, req, doc)  # a duplicate: answer again, move nothing
    if doc["state"] == "PENDING":
        refusal = check(req, rules(ctx))
        if refusal:
            return _finish(ctx, req, _set(ctx, tid, "PENDING", {"state": "FAILED", "reason": refusal}))
        client = _client(ctx)
        try:
            baseline = wallet.latest_tran_id(client, req.direction)
        except Exception as exc:  # nothing sent yet: simply try later
            raise RetryableError(f"transfer {tid}: history unavailable before sending: {exc}") from exc
        doc = _set(ctx, tid, "PENDING", {"state": "EXECUTING", "baseline_tran_id": baseline, "sent_at": now,
                                         "attempts": 1})
        return _send(ctx, req, doc, client)
    # EXECUTING: a previous attempt got no answer (or crashed mid-request): resolve, never resend blindly.
    return _resolve(ctx, req, doc, _client(ctx))


def _send(ctx: Context, req: TransferRequest, doc: dict, client) -> list[Emit]:
    tid = req.transfer_id
    try:
        tran_id = wallet.transfer(client, req.direction, req.asset, req.amount)
    except wallet.REFUSED as exc:
        reason = f"venue refused: {getattr(exc, 'error_message', exc)}"
        return _finish(ctx, req, _set(ctx, tid, "EXECUTING", {"state": "FAILED", "reason": reason}))
    except Exception as exc:  # no answer: the transfer may or may not have happened
        logger.warning("transfer {}: no answer ({}); resolving from the transfer history", tid, exc)
        ctx.store.update_if(COLL, tid, {"unknown_since": ctx.now_ms(), "last_error": str(exc)[:500]},
                            {"state": "EXECUTING"})
        return _resolve(ctx, req, ctx.store.get(COLL, tid), client)
    return _finish(ctx, req, _set(ctx, tid, "EXECUTING", {"state": "SUCCEEDED", "tran_id": tran_id,
                                                          "resolved_by": "reply"}))


def _resolve(ctx: Context, req: TransferRequest, doc: dict, client) -> list[Emit]:
    tid = req.transfer_id
    try:
        found = wallet.find_after(client, req.direction, req.asset, req.amount, int(doc.get("baseline_tran_id", 0)))
    except Exception as exc:
        raise RetryableError(f"transfer {tid}: history unavailable: {exc}") from exc
    if found is not None:
        return _finish(ctx, req, _set(ctx, tid, "EXECUTING", {"state": "SUCCEEDED", "tran_id": found,
                                                              "resolved_by": "history"}))
    grace = int(rules(ctx).get("unknown_resend_after_ms", 60_000))
    since = int(doc.get("unknown_since") or doc.get("sent_at") or 0)
    if ctx.now_ms() - since < grace:
        raise RetryableError(f"transfer {tid}: outcome unknown, not in the history yet")
    # Long enough and still absent: the venue never executed it. Send again, counted.
    doc = _set(ctx, tid, "EXECUTING", {"attempts": int(doc.get("attempts", 1)) + 1, "sent_at": ctx.now_ms(),
                                       "unknown_since": None})
    return _send(ctx, req, doc, client)


def _lock(env: Envelope) -> str:
    src, dst = ENDS.get(env.payload.direction, ("?", "?"))
    return keys.lock_treasury(src, dst)


SPEC = HandlerSpec(
    role="s1-treasury",
    # No done-marker: the transfer document is the idempotency record (duplicates are answered again).
    routes={TransferRequest: Route(on_transfer, lock=_lock, idem=None)},
    commit_each=True,  # each transfer is a venue call: its answer is not held behind the batch
    streams=lambda settings: [keys.TREASURY_COMMANDS],
    description="S1 treasury transfers: limits, whitelist, exactly-once via the transfer history",
)
