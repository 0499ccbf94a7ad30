"""Every document collection name, in one module (ARCHITECTURE §6), grouped by owning service.

One aggregate, one owner: the comment names the service that writes each collection; everyone
else only reads it. ``strategy_events`` is an append-only audit log, never read back as state.
"""

from __future__ import annotations

# S1 feeds and treasury
FUNDING_RECORDS = "funding_records"
TREASURY_TRANSFERS = "treasury_transfers"

# S2 features
REGIME_HISTORY = "regime_history"

# S3 strategy: decisions and their reservations
SIGNALS = "signals"
STRATEGY_EVENTS = "strategy_events"  # audit log: append-only

# S4 router: order intents, their legs, fills
ORDER_INTENTS = "order_intents"
ORDERS = "orders"
FILLS = "fills"
GUARD_STOPS = "guard_stops"
VENUE_SETTINGS = "venue_settings"  # leverage / margin type set per account and symbol

# S5 reconciler
LIQUIDATIONS = "liquidations"
SPOT_BASELINES = "spot_baselines"  # <account_id>: spot holdings outside Chimera's positions (reconciler/spot.py)

# S6 positions: the one record of a position
POSITIONS = "positions"
POSITIONS_SNAPSHOTS = "positions_snapshots"

# account risk role (issue #16): the daily drawdown breaker, its audit, equity/margin snapshots
ACCOUNT_RISK = "account_risk"  # breaker state per account: <account_id>
ACCOUNT_RISK_EVENTS = "account_risk_events"  # audit: every trip and reset, append-only
ACCOUNT_SNAPSHOTS = "account_snapshots"  # <account>:<day>:open (the day's opening equity), <account>:<ms> interval
VIRTUAL_BOOKS = "virtual_books"  # vpos role: <account>:<market>:<symbol> -> every strategy's virtual position there

# S7..S11 (research, config, metrics)
LABELS_12H = "labels_12h"
LABELS_24H = "labels_24h"
LABELS_36H = "labels_36h"
AUTOPSY_REPORTS = "autopsy_reports"
HYPOTHESES = "hypotheses"
EXPERIMENTS = "experiments"
EXPERIMENT_TRIALS = "experiment_trials"  # S9: one walked hypothesis of a distributed experiment
BACKTEST_RUNS = "backtest_runs"
BACKTEST_TRADES = "backtest_trades"
CONFIG_BUNDLES = "config_bundles"
CONFIG_ACTIVE = "config_active"
PROMOTIONS = "promotions"
SIMULATIONS = "simulations"
SHADOW_DECISIONS = "shadow_decisions"  # S10: a candidate's decisions in SHADOW (recorded, never executed)
METRICS_TIMESERIES = "metrics_timeseries"
STRATEGY_METRICS_DAILY = "strategy_metrics_daily"
ALERTS = "alerts"
NOTIFICATIONS = "notifications"

# S12 gateway: people, approvals, audit
USERS = "users"
APPROVALS = "approvals"
AUDIT_LOG = "audit_log"

# Indexes every store creates with the collection. Only the hot equality filters: without them each
# S6 pass scanned every position ever opened (json_extract per row), so a backtest slowed down with
# its own history (111 bars per CPU s over 30 days against 434 over 4). SQLite uses an expression
# index only for the same ``json_extract`` the query writes, which ``sqlite.py`` does for both.
INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    POSITIONS: (("state",), ("symbol", "state")),
    ORDERS: (("client_order_id",), ("intent_id",)),
    FILLS: (("client_order_id",), ("intent_id",)),
    SIGNALS: (("t0",),),
}
