"""Set and clear the kill switch; every change is audited on ``ops:events``.

The switch always carries a TTL: a forgotten HALT must not block trading forever, and an
operator who wants it longer sets it again (which is audited again).
"""

from __future__ import annotations

from chimera.schemas.messages import OpsEvent
from chimera.schemas.strategy import KILL_MODES, KillSwitchState
from chimera.streams import keys
from chimera.streams.producer import Emit

MAX_TTL_MS = 7 * 24 * 3600 * 1000


def set_kill_switch(state, mode: str, *, set_by: str, reason: str, ttl_ms: int, now_ms: int,
                    producer=None) -> Emit:
    """Write the switch through the risk port (``ctx.risk``) and return (and optionally publish) the audit."""
    if mode not in KILL_MODES:
        raise ValueError(f"kill switch mode {mode!r}: use one of {', '.join(KILL_MODES)}")
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise ValueError(f"kill switch ttl_ms {ttl_ms} must be in (0, {MAX_TTL_MS}]")
    if not set_by:
        raise ValueError("kill switch needs set_by (who is pulling it)")
    ks = KillSwitchState(mode=mode, set_by=set_by, reason=reason, set_at=now_ms)
    state.set_kill_switch(ks, ttl_ms)
    audit = OpsEvent(kind="KILL_SWITCH_SET", actor=set_by,
                     detail={"mode": mode, "reason": reason, "ttl_ms": str(ttl_ms), "set_at": str(now_ms)})
    return _publish(Emit(keys.OPS_EVENTS, audit, f"kill_switch:set:{now_ms}:{set_by}:{mode}"), producer)


def clear_kill_switch(state, *, cleared_by: str, reason: str, now_ms: int, producer=None) -> Emit:
    was_set = state.clear_kill_switch()
    audit = OpsEvent(kind="KILL_SWITCH_CLEARED", actor=cleared_by,
                     detail={"reason": reason, "was_set": str(was_set).lower(), "at": str(now_ms)})
    return _publish(Emit(keys.OPS_EVENTS, audit, f"kill_switch:clear:{now_ms}:{cleared_by}"), producer)


def _publish(emit: Emit, producer) -> Emit:
    if producer is not None:
        producer.publish(emit.stream, emit.payload, idempotency_key=emit.idempotency_key)
    return emit
