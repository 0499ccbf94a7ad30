"""Degrade trading to REDUCE_ONLY while S5's last run is inconsistent, and lift it once a run is clean.

The switch is the reconciled account's own kill switch in the risk port (``KillSwitchState``, TTL):
an inconsistent sub1 degrades sub1 only, main trades on. S5 owns a switch only when ``set_by`` is
``SET_BY``: it never overwrites or clears an operator's switch (any mode, any author), and while an
operator's switch binds the account (its own or the global one) S5 sets nothing.
The TTL is refreshed by every inconsistent run, so a reconciler that stops running cannot leave
trading degraded for longer than one TTL.

The port's ``set_kill_switch_if_owner`` / ``clear_kill_switch_if_owner`` (one atomic step) are used
when it has them; otherwise S5 reads the switch and then writes it, and an operator's switch set in
between those two calls would be replaced (the operator sees S5's switch and sets theirs again).
"""

from __future__ import annotations

from typing import Any

from chimera.schemas.messages import Alert, OpsEvent
from chimera.schemas.strategy import KillSwitchState
from chimera.streams import keys
from chimera.streams.producer import Emit

SET_BY = "s5-reconciler"
REASON = "RECONCILE_INCONSISTENT"


def _set_if_ours(port: Any, state: KillSwitchState, ttl_ms: int, account_id: str) -> int:
    """0 = someone else's switch (left alone), 1 = set, 2 = our own switch refreshed."""
    atomic = getattr(port, "set_kill_switch_if_owner", None)
    if atomic is not None:
        return int(atomic(state, ttl_ms, SET_BY, account_id=account_id))
    operator = [ks for ks in (port.kill_switch(), port.kill_switch(account_id)) if ks and ks.set_by != SET_BY]
    if operator:
        return 0
    cur = port.kill_switch(account_id)
    port.set_kill_switch(state, ttl_ms, account_id)
    return 2 if cur is not None else 1


def _clear_if_ours(port: Any, account_id: str) -> bool:
    atomic = getattr(port, "clear_kill_switch_if_owner", None)
    if atomic is not None:
        return int(atomic(SET_BY, account_id=account_id)) == 1
    cur = port.kill_switch(account_id)
    return cur is not None and cur.set_by == SET_BY and port.clear_kill_switch(account_id)


def degrade(port: Any, *, run_id: str, account_id: str, now_ms: int, ttl_ms: int, why: str) -> list[Emit]:
    """REDUCE_ONLY unless an operator's switch is up. Returns the audit (only when newly set)."""
    state = KillSwitchState(mode="REDUCE_ONLY", set_by=SET_BY, reason=f"{REASON}: {why}"[:300], set_at=now_ms)
    if _set_if_ours(port, state, ttl_ms, account_id) != 1:
        return []  # refreshed our own switch, or left the operator's in place
    audit = OpsEvent(kind="KILL_SWITCH_SET", actor=SET_BY,
                     detail={"mode": "REDUCE_ONLY", "reason": REASON, "ttl_ms": str(ttl_ms), "set_at": str(now_ms),
                             "run_id": run_id, "account_id": account_id})
    alert = Alert(level="WARN", code="RECONCILE_DEGRADED",
                  message=f"store and venue disagree ({why}): trading degraded to REDUCE_ONLY",
                  context={"run_id": run_id, "account_id": account_id})
    return [Emit(keys.OPS_EVENTS, audit, f"{run_id}:kill_switch:set", account_id),
            Emit(keys.ALERTS, alert, f"{run_id}:alert:degraded", account_id)]


def lift(port: Any, *, run_id: str, account_id: str, now_ms: int) -> list[Emit]:
    """Clear the switch if (and only if) S5 set it."""
    if not _clear_if_ours(port, account_id):
        return []
    audit = OpsEvent(kind="KILL_SWITCH_CLEARED", actor=SET_BY,
                     detail={"reason": "RECONCILE_CONSISTENT", "was_set": "true", "at": str(now_ms),
                             "run_id": run_id, "account_id": account_id})
    return [Emit(keys.OPS_EVENTS, audit, f"{run_id}:kill_switch:clear", account_id)]
