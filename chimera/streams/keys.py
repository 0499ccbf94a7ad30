"""Every stream, consumer group and Redis key name in Chimera, in one place.

Names follow spec 001 §0 and table C. Hash tags (``{...}``) pin keys that must change together
(one Lua script, one MULTI) to one Redis Cluster slot. Streams are the unit of sharding: a
stream per symbol spreads load across the cluster.
"""

from __future__ import annotations

# --- streams ---------------------------------------------------------------------------


def mkt_stream(market: str, symbol: str) -> str:
    """market: spot | perp | funding."""
    return f"mkt:events:{{{market}}}:{symbol}"


def feat_stream(symbol: str) -> str:
    return f"feat:events:{symbol}"


def metrics_stream(name: str) -> str:
    return f"metrics:events:{name}"


SIG_EVENTS = "sig:events"
ORD_RESULTS = "ord:{results}"
ORD_COMMANDS = "ord:{commands}"  # S4's input: SubmitOrder / CancelOrder from S3, S5, S6, gateway
VENUE_REPORTS = "venue:{reports}"  # S1 user-data → S4/S5/S6
POS_EVENTS = "pos:events"
CFG_EVENTS = "cfg:events"
OPS_EVENTS = "ops:events"
ALERTS = "alerts"
STRAT_COMMANDS = "strat:{commands}"  # Decide (gateway POST /decide)
FEAT_COMMANDS = "feat:{commands}"  # RecomputeFeatures
TREASURY_COMMANDS = "treasury:{commands}"  # TransferRequest → S1
TREASURY_RESULTS = "treasury:{results}"
RECON_COMMANDS = "recon:{commands}"  # Reconcile → S5
POS_COMMANDS = "pos:{commands}"  # ManagePositions ticks → S6
ROUTER_TIMERS = "ord:{timers}"  # maker window expiries, TWAP slices → S4
DEAD_LETTER = "dlq:{dead}"

# --- consumer groups -----------------------------------------------------------------------


def group(role: str) -> str:
    return f"cg:{role}"


# --- keys ---------------------------------------------------------------------------------------

KILL_SWITCH = "prod:{kill_switch}"
REGIME_STATE = "prod:{regime}:market:state"
HEALTH_STATE = "prod:{health}:system:state"
TWAP_QUEUE = "prod:{exec}:twap:queue"
RISK_BUDGET_INUSE = "risk:{budget}:fut_margin:inuse"
RECON_LAST_RUN = "recon:{last_run_ts}"


def risk_concurrency(symbol: str) -> str:
    # Same tag as the budget so one Lua script can reserve both atomically on a cluster.
    return f"risk:{{budget}}:concurrency:{symbol}"


def lock_pos(pos_id: str) -> str:
    return f"lock:{{pos}}:{pos_id}"


def lock_treasury(src: str, dst: str) -> str:
    return f"lock:{{treasury}}:{src}:{dst}"


def guard_stop(symbol: str, intent_id: str) -> str:
    return f"guard:{{stop}}:{symbol}:{intent_id}"


def pos_sl_level(pos_id: str) -> str:
    return f"pos:{{sl}}:level:{pos_id}"


def pos_tp_ladder(pos_id: str) -> str:
    return f"pos:{{tp}}:ladder:{pos_id}"


def pos_adds(pos_id: str) -> str:
    return f"pos:{{adds}}:{pos_id}"


def feat_cache(symbol: str) -> str:
    return f"feat:{{cache}}:{symbol}"


# Runtime plumbing. The lock and its fencing counter share a tag so acquire is one script.


def lock_key(scope: str) -> str:
    return scope if scope.startswith("lock:") else f"lock:{{{scope}}}"


def fence_key(lock: str) -> str:
    return f"fence:{lock}"


def idem_key(group_name: str, key: str) -> str:
    return f"idem:{{{group_name}}}:{key}"


def lease_key(role: str, stream: str) -> str:
    return f"lease:{{{role}}}:{stream}"


def members_key(role: str) -> str:
    return f"members:{{{role}}}"


SCHED_DUE = "sched:{due}"  # ZSET member=key, score=due ms
SCHED_PAYLOADS = "sched:{due}:payloads"  # HASH key → (stream, envelope); same slot as SCHED_DUE
SCHED_LEASE = "lease:{sched}:active"


# --- S1 connectors / S2 features (issue #4) ----------------------------------------------------

# --- S3 strategy (issue #5) --------------------------------------------------------------------

# --- S4 router / S6 positions (issue #6) ----------------------------------------------------------

# --- S5 reconciler / gateway (issue #7) ------------------------------------------------------------
