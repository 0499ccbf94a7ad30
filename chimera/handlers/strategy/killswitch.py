"""Set and clear the kill switch; every change is audited on ``ops:events``.

The switch always carries a TTL: a forgotten HALT must not block trading forever, and an
operator who wants it longer sets it again (which is audited again).

``account_id`` None is the global switch (every account); an account's own switch binds that
account only (``RiskState.effective_kill_switch``). The audit names which one moved.
"""

from __future__ import annotations

from chimera.schemas.messages import OpsEvent
from chimera.schemas.strategy import KILL_MODES, KillSwitchState
from chimera.streams import keys
from chimera.streams.producer import Emit

MAX_TTL_MS = 7 * 24 * 3600 * 1000


def set_kill_switch(state, mode: str, *, set_by: str, reason: str, ttl_ms: int, now_ms: int,
                    producer=None, account_id: str | None = None) -> Emit:
    """Write the switch through the risk port (``ctx.risk``) and return (and optionally publish) the audit."""
    if mode not in KILL_MODES:
        raise ValueError(f"kill switch mode {mode!r}: use one of {', '.join(KILL_MODES)}")
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise ValueError(f"kill switch ttl_ms {ttl_ms} must be in (0, {MAX_TTL_MS}]")
    if not set_by:
        raise ValueError("kill switch needs set_by (who is pulling it)")
    ks = KillSwitchState(mode=mode, set_by=set_by, reason=reason, set_at=now_ms)
    state.set_kill_switch(ks, ttl_ms, account_id)
    audit = OpsEvent(kind="KILL_SWITCH_SET", actor=set_by,
                     detail={"mode": mode, "reason": reason, "ttl_ms": str(ttl_ms), "set_at": str(now_ms),
                             **_scope(account_id)})
    return _publish(Emit(keys.OPS_EVENTS, audit, f"kill_switch:set:{now_ms}:{set_by}:{mode}{_key(account_id)}",
                         account_id or "main"), producer)


def clear_kill_switch(state, *, cleared_by: str, reason: str, now_ms: int, producer=None,
                      account_id: str | None = None) -> Emit:
    was_set = state.clear_kill_switch(account_id)
    audit = OpsEvent(kind="KILL_SWITCH_CLEARED", actor=cleared_by,
                     detail={"reason": reason, "was_set": str(was_set).lower(), "at": str(now_ms),
                             **_scope(account_id)})
    return _publish(Emit(keys.OPS_EVENTS, audit, f"kill_switch:clear:{now_ms}:{cleared_by}{_key(account_id)}",
                         account_id or "main"), producer)


def _scope(account_id: str | None) -> dict[str, str]:
    return {"scope": "GLOBAL"} if account_id is None else {"scope": "ACCOUNT", "account_id": account_id}


def _key(account_id: str | None) -> str:
    return "" if account_id is None else f":{account_id}"


def _publish(emit: Emit, producer) -> Emit:
    if producer is not None:
        producer.publish(emit.stream, emit.payload, idempotency_key=emit.idempotency_key, account_id=emit.account_id)
    return emit
