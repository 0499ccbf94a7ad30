"""/v1/ops: per-account execution metrics and the system's health (seed 000), thin over ``gateway.ops``."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import FromPath, QueryParameter

from chimera.gateway import ops
from chimera.gateway.errors import ApiError
from chimera.gateway.routes import _deps, spec

WINDOW_MIN, WINDOW_MAX = 60, 7 * 24 * 3600
AccountQuery = Annotated[str | None, QueryParameter(
    name="account_id", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9:_.-]+$",
    description='an account of the accounts file, or "all" (the default): every account')]
WindowQuery = Annotated[int, QueryParameter(
    name="window_sec", ge=WINDOW_MIN, le=WINDOW_MAX,
    description=f"the look-back in seconds, {WINDOW_MIN}..{WINDOW_MAX} (default 3600)")]


class Distribution(msgspec.Struct):
    samples: int
    avg: float
    p50: float
    p95: float
    max: float


class AccountMetrics(msgspec.Struct):
    orders: int
    rejects: int
    reject_rate: float | None
    fills: int
    filled_qty: str
    notional_usdt: str
    fees: str
    slippage_bps: Distribution | None
    latency_ms: Distribution | None
    stream_lag: int
    ws_status: str
    last_connected_at: int


class OpsAlert(msgspec.Struct):
    account_id: str | None
    code: str
    metric: str
    level: str
    value: Any
    threshold: Any
    message: str


class OpsMetrics(msgspec.Struct):
    """``by_account``: per account; ``totals``: the same summed, plus the consumer groups' backlog
    (``groups``) and S4's all-account figures (``router_ack_p95_ms``, maker counters)."""

    generated_at: int
    window_sec: int
    account_id: str
    by_account: dict[str, AccountMetrics]
    totals: dict[str, Any]
    alerts: list[OpsAlert]
    thresholds: dict[str, float]


class OpsHealth(msgspec.Struct):
    status: str  # OK | DEGRADED | FAIL: the worst check
    checks: list[dict[str, Any]]
    started_at: int
    uptime_sec: int
    generated_at: int


def known_account(d, account_id: str | None) -> None:
    if account_id in (None, "all"):
        return
    names = [a.account_id for a in ops.configured_accounts(d)]
    if account_id not in names:
        raise ApiError(422, "UNKNOWN_ACCOUNT", f"account_id {account_id!r} is not in the accounts file "
                       f"({', '.join(names)}, or all)", field="account_id")


@get("/v1/ops/metrics", **spec("ops.read", 400, 422))
def ops_metrics(request: Request, account_id: AccountQuery = None, window_sec: WindowQuery = 3600) -> OpsMetrics:
    """Fills, rejects, slippage, command -> result latency and stream backlog per account over the window,
    with the alerts their thresholds raise."""
    d = _deps(request)
    known_account(d, account_id)
    return msgspec.convert(ops.ops_metrics(d, account_id, window_sec), OpsMetrics)


@get("/v1/ops/health", **spec("ops.read"))
def ops_health(request: Request) -> OpsHealth:
    """Redis, the store, each account's streams, the consumer groups' backlog and every role's heartbeat;
    ``status`` is the worst check (a FAIL is still answered 200: the body is the finding)."""
    return msgspec.convert(ops.ops_health(_deps(request)), OpsHealth)


@get("/v1/ops/traces/{key:str}", **spec("ops.read", 400, 404))
def ops_traces(request: Request, key: FromPath[str],
               hours: Annotated[int, QueryParameter(name="hours", ge=1, le=48, description=(
                   "look back this many clock hours, 1..48 (traces live two days)"))] = 48) -> dict:
    """Execution traces of one idempotency key (a command's id: intent_id, simulation_id, ...): START then
    DONE (``ms``, ``outputs``) or ERROR (``outcome`` retry|dead, ``reason``) per consumer group, oldest
    first. 404 when no worker handled that key in the window."""
    from chimera.workers import traces

    d = _deps(request)
    steps = traces.query(d.r, key, now_ms=d.clock.now_ms(), hours=hours)
    if not steps:
        raise ApiError(404, "NOT_FOUND", f"no execution trace of key {key!r} in the last {hours} h", field="key")
    return {"key": key, "hours": hours, "items": steps, "count": len(steps)}


OPS_ROUTES = [ops_metrics, ops_health, ops_traces]
