"""Four-eyes approvals: moving money, lifting the kill switch, promoting a bundle.

A request is stored in ``approvals/<approval_id>`` with the exact command to run (``request``),
who asked and when it expires. Another person (a human, never the requester, with
``approvals.decide``) approves it; the PENDING → APPROVED step is a compare-and-set so two
approvers cannot both execute it, and execution replays the stored ``request`` field for field.
S6's auto top-ups (``treasury_transfers`` left PENDING by S6, spec B8) appear here as requests by
``s6``. States: PENDING → APPROVED → EXECUTED | FAILED, PENDING → REJECTED | EXPIRED.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from chimera.gateway.errors import ApiError, not_found
from chimera.handlers.strategy.killswitch import clear_kill_switch
from chimera.risk.state import RedisState
from chimera.schemas.messages import OpsEvent, PromoteBundle, TransferRequest
from chimera.store.collections import APPROVALS, TREASURY_TRANSFERS
from chimera.streams import keys

KINDS = ("TREASURY_TRANSFER", "KILL_SWITCH_LIFT", "PROMOTE")


def create(d, kind: str, request: dict, requested_by: str, approval_id: str | None = None) -> dict:
    now = d.clock.now_ms()
    aid = approval_id or f"ap-{uuid.uuid4().hex[:20]}"
    doc = {"approval_id": aid, "kind": kind, "request": request, "requested_by": requested_by, "status": "PENDING",
           "created_at": now, "expires_at": now + d.auth.cfg.approval_ttl_s * 1000, "decided_by": "",
           "decided_at": 0, "result": ""}
    if d.store.insert_if_absent(APPROVALS, aid, doc):
        _announce(d, "APPROVAL_REQUESTED", requested_by, doc)
    return d.store.get(APPROVALS, aid)


def _announce(d, kind: str, actor: str, doc: dict) -> None:
    """Every approval step on ops:events, with the person who took it as actor (S11, the UI)."""
    d.producer.publish(keys.OPS_EVENTS, OpsEvent(kind=kind, actor=actor, detail={
        "approval_id": doc["approval_id"], "kind": doc["kind"], "requested_by": doc["requested_by"]}),
        idempotency_key=f"{kind.lower()}:{doc['approval_id']}")


def sync_s6_requests(d) -> None:
    """S6 leaves its top-ups PENDING in treasury_transfers; each becomes one approval request."""
    for t in d.store.query(TREASURY_TRANSFERS, {"state": "PENDING", "requested_by": "s6"}, limit=100):
        create(d, "TREASURY_TRANSFER", {"transfer_id": t["transfer_id"], "asset": t["asset"], "amount": t["amount"],
                                        "direction": t["direction"], "reason": t.get("reason_requested", "")},
               "s6", approval_id=f"s6-{t['transfer_id']}")


def get(d, aid: str) -> dict:
    doc = d.store.get(APPROVALS, aid)
    if doc is None:
        raise not_found("approval", aid)
    return _expire(d, doc)


def _expire(d, doc: dict) -> dict:
    if doc["status"] == "PENDING" and d.clock.now_ms() >= doc["expires_at"]:
        d.store.update_if(APPROVALS, doc["approval_id"], {"status": "EXPIRED"}, {"status": "PENDING"})
        doc = d.store.get(APPROVALS, doc["approval_id"])
    return doc


def listing(d, status: str | None, limit: int) -> list[dict]:
    sync_s6_requests(d)
    docs = d.store.query(APPROVALS, {"status": status} if status else None, order_by="created_at", desc=True,
                         limit=limit)
    return [_expire(d, x) for x in docs]


def decide(d, aid: str, approver, approve: bool, note: str = "") -> dict:
    doc = get(d, aid)
    if doc["status"] != "PENDING":
        raise ApiError(409, "APPROVAL_NOT_PENDING", f"approval {aid} is {doc['status']}")
    if approver.kind != "human":
        raise ApiError(403, "FORBIDDEN", "a service token cannot approve: a person must")
    if approver.name == doc["requested_by"]:
        raise ApiError(403, "SAME_PERSON", "four eyes: the approver must not be the requester")
    now = d.clock.now_ms()
    new = "APPROVED" if approve else "REJECTED"
    if not d.store.update_if(APPROVALS, aid, {"status": new, "decided_by": approver.name, "decided_at": now,
                                              "note": note}, {"status": "PENDING"}):
        raise ApiError(409, "APPROVAL_NOT_PENDING", f"approval {aid} was decided meanwhile")
    if not approve:
        _announce(d, "APPROVAL_REJECTED", approver.name, doc)
        return d.store.get(APPROVALS, aid)
    _announce(d, "APPROVAL_APPROVED", approver.name, doc)
    try:
        result = execute(d, d.store.get(APPROVALS, aid), approver.name)
        d.store.update_if(APPROVALS, aid, {"status": "EXECUTED", "result": result}, {"status": "APPROVED"})
    except ApiError as exc:
        d.store.update_if(APPROVALS, aid, {"status": "FAILED", "result": exc.detail}, {"status": "APPROVED"})
        raise
    return d.store.get(APPROVALS, aid)


def execute(d, doc: dict, approver: str) -> str:
    req = doc["request"]
    if doc["kind"] == "TREASURY_TRANSFER":
        msg = TransferRequest(transfer_id=req["transfer_id"], asset=req["asset"], amount=Decimal(req["amount"]),
                              direction=req["direction"], requested_by=doc["requested_by"],
                              reason=f"{req.get('reason', '')} [approved by {approver}]".strip())
        entry = d.producer.publish(keys.TREASURY_COMMANDS, msg, idempotency_key=req["transfer_id"])
        return f"TransferRequest {req['transfer_id']} on {keys.TREASURY_COMMANDS} ({entry})"
    if doc["kind"] == "KILL_SWITCH_LIFT":
        clear_kill_switch(RedisState(d.r), cleared_by=approver,
                          reason=f"{req['reason']} (requested by {doc['requested_by']}, approved by {approver})",
                          now_ms=d.clock.now_ms(), producer=d.producer, account_id=req.get("account_id"))
        return f"kill switch of account {req['account_id']} cleared" if req.get("account_id") else "kill switch cleared"
    if doc["kind"] == "PROMOTE":
        msg = PromoteBundle(promotion_id=req["promotion_id"], bundle_id=req["bundle_id"], rev=int(req["rev"]),
                            requested_by=doc["requested_by"], approved_by=approver)
        entry = d.producer.publish(keys.CFG_COMMANDS, msg, idempotency_key=req["promotion_id"])
        return f"PromoteBundle {req['promotion_id']} on {keys.CFG_COMMANDS} ({entry})"
    raise ApiError(501, "NOT_IMPLEMENTED", f"approval kind {doc['kind']} has no executor")
