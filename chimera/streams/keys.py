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
CFG_COMMANDS = "cfg:{commands}"  # PromoteBundle / PromotionCommand and S10's analysis timers → S10
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
HEALTH_TIMERS = "s11:{timers}"  # S11 grading/daily-rollup ticks; NOTIFY_OUTBOX: notifier input + its retry timers
NOTIFY_OUTBOX = "notify:{outbox}"

# --- consumer groups -----------------------------------------------------------------------


def group(role: str) -> str:
    return f"cg:{role}"


# --- keys ---------------------------------------------------------------------------------------

KILL_SWITCH = "prod:{kill_switch}"
REGIME_STATE = "prod:{regime}:market:state"
HEALTH_STATE = "prod:{health}:system:state"
RISK_BUDGET_INUSE = "risk:{budget}:fut_margin:inuse"


def risk_concurrency(symbol: str, account_id: str = "main") -> str:
    # Same tag as the account's budget so one Lua script can reserve both atomically on a cluster.
    return f"risk:{{{risk_budget_tag(account_id)}}}:concurrency:{symbol}"


def risk_budget_tag(account_id: str = "main") -> str:
    """The hash tag of one account's budget keys. Each account gets its own slot (accounts never
    share a budget, so no script needs two of them); ``main`` keeps the plain ``{budget}`` tag, so
    the reservations held before budgets were per account stay counted."""
    return "budget" if account_id == "main" else f"budget:{account_id}"


def risk_budget_inuse(account_id: str = "main") -> str:
    return f"risk:{{{risk_budget_tag(account_id)}}}:fut_margin:inuse"


def risk_reservations(account_id: str = "main") -> str:
    return f"risk:{{{risk_budget_tag(account_id)}}}:reservations"


def risk_open_positions(account_id: str = "main") -> str:
    return f"risk:{{{risk_budget_tag(account_id)}}}:open_positions"


def kill_switch_account(account_id: str) -> str:
    """One account's own kill switch (blocks that account only; ``KILL_SWITCH`` blocks every account).
    Same {kill_switch} tag as the global one, so both can be read in one step."""
    return f"prod:{{kill_switch}}:account:{account_id}"


def lock_pos(pos_id: str) -> str:
    return f"lock:{{pos}}:{pos_id}"


def lock_treasury(src: str, dst: str) -> str:
    return f"lock:{{treasury}}:{src}:{dst}"


def lock_recon(account_id: str) -> str:
    """S5: one reconcile run per account at a time."""
    return f"lock:{{recon:{account_id}}}"


def feat_cache(symbol: str) -> str:
    return f"feat:{{cache}}:{symbol}"


# Runtime plumbing. The lock and its fencing counter share a tag so acquire is one script.


def lock_key(scope: str) -> str:
    return scope if scope.startswith("lock:") else f"lock:{{{scope}}}"


def fence_key(lock: str) -> str:
    return f"fence:{lock}"


def idem_key(group_name: str, key: str) -> str:
    return f"idem:{{{group_name}}}:{key}"


def fails_key(group_name: str) -> str:
    """HASH "<stream>/<entry id>" → handler failures, and "...#crash" → workers that died handling it."""
    return f"fails:{{{group_name}}}"


def inhand_key(group_name: str) -> str:
    """HASH "<stream>/<entry id>" → "<consumer>@<ms>": redelivered entries being handled right now. A
    marker found by whoever handles the entry next means its handler's worker died (crash-loop guard)."""
    return f"inhand:{{{group_name}}}"


def lease_key(role: str, stream: str) -> str:
    return f"lease:{{{role}}}:{stream}"


def members_key(role: str) -> str:
    return f"members:{{{role}}}"


SCHED_DUE = "sched:{due}"  # ZSET member=key, score=due ms
SCHED_PAYLOADS = "sched:{due}:payloads"  # HASH key → (stream, envelope); same slot as SCHED_DUE
SCHED_LEASE = "lease:{sched}:active"
REPLAY_CLOCK = "replay:{clock}"  # JSON {time_ms, speed, paced, done}: the local venue's replay time (workers/clock.py)


# --- S1 connectors / S2 features (issue #4) ----------------------------------------------------


def mkt_bars(symbol: str) -> str:
    """ZSET of closed 1m bars (score = open time, member = JSON), written by S1 before it XADDs the
    bar: S2 reads the rho reference (BTC) from here, so no replica waits on another's stream."""
    return f"mkt:{{bars}}:{symbol}"


def feat_cache_seq(symbol: str) -> str:
    # Same slot as feat_cache: the state blob and its sequence number are written in one MULTI.
    return f"feat:{{cache}}:{symbol}:seq"


REGIME_REV = "prod:{regime}:market:rev"  # INCR'd on every daily regime write (same slot as REGIME_STATE)
REGIME_TIMER = "s2:regime:daily"  # due-queue key of the daily regime tick


def s1_stream_status(account_id: str) -> str:
    """HASH ws_status / last_error / last_connected_at of one account's streams (seed 000)."""
    return f"s1:{{status}}:{account_id}"


# The streams S1 reports a status for, per account: market data (perp, spot; the main account) and
# user data (FUT, SPOT).
S1_STATUS_MARKETS = ("perp", "spot", "user_fut", "user_spot")


def s1_stream_status_market(account_id: str, market: str) -> str:
    """HASH ws_status / last_error / last_connected_at of one account's stream of one market
    (``S1_STATUS_MARKETS``); ``s1_stream_status`` holds the account's worst of them."""
    return f"s1:{{status}}:{account_id}:{market}"


def s1_seen_trade(account_id: str) -> str:
    """Legacy unbounded SET of published user-data reports; replaced by ``s1_seen_window`` (S1 deletes it)."""
    return f"s1:{{seen}}:{account_id}"


def s1_seen_window(account_id: str) -> str:
    """ZSET member = a published user-data report's identity, score = when it was published (ms);
    members older than the de-duplication window are trimmed."""
    return f"s1:{{seen}}:window:{account_id}"


def s1_event_cursor(account_id: str, market: str) -> str:
    """The venue event time (ms) of the last user-data event S1 handled for one account and market: a
    restarted S1 reads back fills from there. Beside the seen window (same ``{seen}`` slot: one pipeline)."""
    return f"s1:{{seen}}:cursor:{account_id}:{market}"


def s1_funding_cursor(account_id: str) -> str:
    """Income time (ms) up to which FUNDING_FEE rows were copied to funding_records for one account."""
    return f"s1:{{funding}}:cursor:{account_id}"


# --- S3 strategy (issue #5) --------------------------------------------------------------------

# Margin in use is kept in integer micro-USDT (1e-6) so reserve/release sums are exact. The
# reservation hash makes reserve and release idempotent per position; every key shares the
# {budget} tag with RISK_BUDGET_INUSE and risk_concurrency() so one Lua script covers them all.
# Budgets are per account (``risk_reservations(account_id)`` ...): these constants are main's keys.
RISK_RESERVATIONS = "risk:{budget}:reservations"  # HASH pos_id -> "symbol|micro_usdt[|slot|add_ids]" (state.py)
RISK_OPEN_POSITIONS = "risk:{budget}:open_positions"  # count of reserved positions, all symbols

# --- S4 router / S6 positions (issue #6) ----------------------------------------------------------

ROUTER_COUNTERS = "ord:{metrics}:router"  # HASH: maker_timeout_count, maker_reject_count, guard_fired_count,
# maker_sent_count, maker_filled_count
ROUTER_ACK_MS = "ord:{metrics}:router:ack_ms"  # LIST: last command → venue-ack latencies per leg (ms), newest first
POS_TICK_TIMER = "s6:manage:tick"  # due-queue key of S6's next management tick (one pending at a time)


# --- S5 reconciler / gateway (issue #7) ------------------------------------------------------------


def gw_order_account(intent_id: str) -> str:
    """intent_id -> account_id of an order accepted by the gateway (the local cancel mapping, seed 000)."""
    return f"gw:{{orders}}:account:{intent_id}"


def gw_simulation_queued(simulation_id: str) -> str:
    """POST /v1/simulate accepted it, S10 has not started it yet (GET answers QUEUED; TTL one day)."""
    return f"gw:{{sims}}:queued:{simulation_id}"


def recon_periodic_timer(account_id: str) -> str:
    """Due-queue key of S5's next periodic run for one account (one pending run per account)."""
    return f"s5:reconcile:periodic:{account_id}"


def lock_intent(intent_id: str) -> str:
    """S4's lock on one intent: its legs' compare-and-set writes and venue calls never interleave."""
    return f"lock:{{intent:{intent_id}}}"


def lock_order(client_order_id: str) -> str:
    """S4's lock on one exchange order (venue reports, before the intent is known)."""
    return f"lock:{{order:{client_order_id}}}"


def router_timer(name: str, intent_id: str, part: str = "") -> str:
    """Timer key of an S4 timer (maker window, TWAP slice ``part``, guard watch): re-arming replaces it."""
    return f"router:{name}:{intent_id}:{part}"


def router_counted(name: str, subject: str) -> str:
    """Marker that ``name`` was already counted for ``subject`` (same slot as ROUTER_COUNTERS)."""
    return f"ord:{{metrics}}:router:counted:{name}:{subject}"


# --- S12 gateway auth (issue #15): all under one tag, small and low-rate ----------------------------
def gw_refresh(token_hash: str) -> str: return f"gw:{{auth}}:refresh:{token_hash}"  # noqa: E704 - live refresh token -> JSON
def gw_refresh_used(token_hash: str) -> str: return f"gw:{{auth}}:refresh_used:{token_hash}"  # noqa: E704 - rotated token -> family (reuse = theft)
def gw_family_revoked(family: str) -> str: return f"gw:{{auth}}:family_revoked:{family}"  # noqa: E704
def gw_revoked_jti(jti: str) -> str: return f"gw:{{auth}}:revoked:{jti}"  # noqa: E704 - access token revocation list, TTL = token's remaining life
def gw_login_fails(user: str) -> str: return f"gw:{{auth}}:fails:{user}"  # noqa: E704
def gw_lockout(user: str) -> str: return f"gw:{{auth}}:lock:{user}"  # noqa: E704
def gw_rate(user: str, window: int) -> str: return f"gw:{{rate}}:{user}:{window}"  # noqa: E704 - fixed one-minute windows

# --- S7 labels / S8 autopsy (research loop) --------------------------------------------------------
LABELS_COMMANDS = "labels:{commands}"  # BackfillLabels (gateway) and S7's own backfill timer
LABELS_READY = "labels:{ready}"  # LabelsReady → S8, UI
LABELS_LAST_BACKFILL = "labels:{last_backfill_ts}"  # HASH h → clock ms of the last backfill
AUTOPSY_COMMANDS = "autopsy:{commands}"  # RequestAutopsy (gateway) → S8
EXP_COMMANDS = "exp:{commands}"  # RunExperiment (gateway, CLI) → S9
EXP_TRIALS = "exp:{trials}"  # RunTrial / FinalizeExperiment: one hypothesis per entry, any s9 replica
BT_LAST_RUN = "bt:{last_run_ts}"  # HASH family → clock ms of S9's last finished experiment

# --- virtual positions (chimera/accounts, role vpos) ---------------------------------------------
VPOS_COMMANDS = "vpos:{commands}"  # Reconcile (the vpos role's own periodic timer) → vpos


def lock_vpos(account_id: str, market: str, symbol: str) -> str:
    """The vpos role's lock on one account's book of one symbol (fills and reconcile never interleave)."""
    return f"lock:{{vpos:{account_id}:{market}:{symbol}}}"


def vpos_reconcile_timer(account_id: str) -> str:
    """Due-queue key of the vpos role's next reconcile of one account (one pending per account)."""
    return f"vpos:reconcile:{account_id}"


# --- account risk (issue #16 item 5): breaker samples (on S11's timers), execution traces -------------
def risk_sample_timer(account_id: str) -> str:
    """Due-queue key of one account's next equity sample (re-arming replaces it: one pending per account)."""
    return f"risk:sample:{account_id}"


def exec_trace(group_name: str, hour: int) -> str:
    """HASH of one group's execution traces for one clock hour: field ``<idempotency key>|START|DONE|ERROR``.

    One key per (group, hour), written with one HSET per read batch, expired as a whole (no per-field TTL
    before Redis 7.4); single-key commands only, so no hash tag is needed.
    """
    return f"trace:{group_name}:{hour}"
