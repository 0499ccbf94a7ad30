"""Degrade trading to REDUCE_ONLY while S5's last run is inconsistent, and lift it once a run is clean.

The switch is S3's ``prod:{kill_switch}`` (``KillSwitchState`` JSON, TTL = key expiry). S5 owns a
switch only when ``set_by`` is ``SET_BY``: it never overwrites or clears an operator's switch (any
mode, any author), which the two scripts below check atomically against the stored value. The TTL
is refreshed by every inconsistent run, so a reconciler that stops running cannot leave trading
degraded for longer than one TTL.
"""

from __future__ import annotations

import msgspec

from chimera.schemas.messages import Alert, OpsEvent
from chimera.schemas.strategy import KillSwitchState
from chimera.streams import keys
from chimera.streams.producer import Emit

SET_BY = "s5-reconciler"
REASON = "RECONCILE_INCONSISTENT"

# KEYS[1] switch; ARGV: value, ttl ms, owner. 0 = someone else's switch, 1 = set, 2 = refreshed.
_SET_IF_OURS = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if not ok or type(doc) ~= 'table' or doc['set_by'] ~= ARGV[3] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if cur then return 2 end
return 1
"""

# KEYS[1] switch; ARGV: owner. 1 = cleared, 0 = nothing set, -1 = someone else's switch.
_CLEAR_IF_OURS = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, doc = pcall(cjson.decode, cur)
if ok and type(doc) == 'table' and doc['set_by'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return -1
"""


def degrade(r, *, run_id: str, account_id: str, now_ms: int, ttl_ms: int, why: str) -> list[Emit]:
    """REDUCE_ONLY unless an operator's switch is up. Returns the audit (only when newly set)."""
    state = KillSwitchState(mode="REDUCE_ONLY", set_by=SET_BY, reason=f"{REASON}: {why}"[:300], set_at=now_ms)
    got = int(r.eval(_SET_IF_OURS, 1, keys.KILL_SWITCH, msgspec.json.encode(state), ttl_ms, SET_BY))
    if got != 1:
        return []  # refreshed our own switch, or left the operator's in place
    audit = OpsEvent(kind="KILL_SWITCH_SET", actor=SET_BY,
                     detail={"mode": "REDUCE_ONLY", "reason": REASON, "ttl_ms": str(ttl_ms), "set_at": str(now_ms),
                             "run_id": run_id, "account_id": account_id})
    alert = Alert(level="WARN", code="RECONCILE_DEGRADED",
                  message=f"store and venue disagree ({why}): trading degraded to REDUCE_ONLY",
                  context={"run_id": run_id, "account_id": account_id})
    return [Emit(keys.OPS_EVENTS, audit, f"{run_id}:kill_switch:set", account_id),
            Emit(keys.ALERTS, alert, f"{run_id}:alert:degraded", account_id)]


def lift(r, *, run_id: str, account_id: str, now_ms: int) -> list[Emit]:
    """Clear the switch if (and only if) S5 set it."""
    if int(r.eval(_CLEAR_IF_OURS, 1, keys.KILL_SWITCH, SET_BY)) != 1:
        return []
    audit = OpsEvent(kind="KILL_SWITCH_CLEARED", actor=SET_BY,
                     detail={"reason": "RECONCILE_CONSISTENT", "was_set": "true", "at": str(now_ms),
                             "run_id": run_id, "account_id": account_id})
    return [Emit(keys.OPS_EVENTS, audit, f"{run_id}:kill_switch:clear", account_id)]
