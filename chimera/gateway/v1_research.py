"""/v1 research and risk reads: simulate (a producer: S10 runs it), backtest runs and their trades, the
account snapshots and circuit breakers (issues #12, #14, #16), thin over the services' own functions.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from chimera.gateway.errors import ApiError, found
from chimera.gateway.rbac import principal
from chimera.gateway.routes import Id, Limit, _deps, audit_detail, spec
from chimera.store import collections as C
from chimera.streams import keys

QUEUED_TTL_S = 24 * 3600
MAX_DATA = 16
# Item constraints of a list do not reach the OpenAPI document: the length is checked in the route (422).
DataText = Annotated[str, msgspec.Meta(description=(
    'as `chimera backtest --data`: "sample", a Binance Vision / freqtrade file path on the server, or '
    "kind:futures:SYMBOL:path[:interval]; at most 500 characters"))]
When = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[0-9][0-9T:-]*$",
                                   description="2025-07-01, 2025-07-01T12:30 (UTC) or epoch ms")]


class SimulateBody(msgspec.Struct, forbid_unknown_fields=True):
    """The candidate is a stored ``bundle_id`` + ``rev`` or an inline ``bundle`` body (one of the two);
    ``from`` is inclusive, ``to`` exclusive."""

    bundle_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    rev: Annotated[int, msgspec.Meta(ge=1, le=10**9)] | None = None
    bundle: dict[str, Any] | None = None
    data: Annotated[list[DataText], msgspec.Meta(min_length=1, max_length=MAX_DATA)] = msgspec.field(
        default_factory=lambda: ["sample"])
    from_: When | None = msgspec.field(default=None, name="from")
    to: When | None = None
    eps: Annotated[float, msgspec.Meta(gt=0, lt=1, description="relative move of each parameter")] = 0.05
    simulation_id: Id | None = None


def _rule(field: str, detail: str, status: int = 422, code: str = "RULE_VIOLATED") -> ApiError:
    return ApiError(status, code, detail, field=field)


def _check_candidate(d, data: SimulateBody) -> None:
    from chimera.handlers.config import service

    if data.bundle is not None:
        if data.bundle_id is not None or data.rev is not None:
            raise _rule("bundle", "give either bundle (an inline body) or bundle_id + rev, not both")
        report = service.check(data.bundle)
        if not report.ok:
            raise _BundleRejected(report)
        return
    if data.bundle_id is None:
        raise _rule("bundle_id", "name the candidate: bundle_id + rev of a stored bundle, or an inline bundle")
    if data.rev is None:
        raise _rule("rev", f"bundle_id {data.bundle_id!r} needs its rev")
    if service.get_bundle(d.store, data.bundle_id, data.rev) is None:
        raise ApiError(404, "NOT_FOUND", f"bundle {data.bundle_id}:{data.rev} is unknown (POST /v1/bundles first)",
                       field="bundle_id")


class _BundleRejected(Exception):
    def __init__(self, report) -> None:
        self.report = report


def _check_window_and_data(data: SimulateBody) -> None:
    """What the backtest would refuse, refused here before anything is queued (file contents are
    checked by S10 when it runs: a bad row then makes the simulation FAILED with the reason)."""
    from chimera.backtest.data import DataError, parse_spec, parse_time

    bounds = []
    for name, text in (("from", data.from_), ("to", data.to)):
        try:
            bounds.append(parse_time(text, name))
        except DataError as exc:
            raise _rule(name, str(exc)) from None
    if None not in bounds and bounds[0] >= bounds[1]:
        raise _rule("to", f"to {data.to} must be after from {data.from_} (to is exclusive)")
    for i, text in enumerate(data.data):
        if not 0 < len(text) <= 500:
            raise _rule(f"data[{i}]", "a data spec is 1..500 characters, e.g. sample")
        try:
            specs = parse_spec(text)
        except DataError as exc:
            raise _rule(f"data[{i}]", str(exc)) from None
        for s in specs:
            if not Path(s.path).is_file():
                raise _rule(f"data[{i}]", f"data {text!r}: file {s.path} does not exist on the server")


@post("/v1/simulate", status_code=HTTP_202_ACCEPTED, **spec("config.write", 404, unsafe=True))
def simulate(request: Request, data: JSONBody[SimulateBody]) -> Response:
    """S10: candidate vs active in-process backtests on one window (KPIs side by side) and the ±eps
    sensitivity, run by the s10 worker: ``202 {simulation_id, status: QUEUED}``; poll
    ``GET /v1/simulations/{simulation_id}``. Re-sending a known ``simulation_id`` queues nothing and
    answers its current status."""
    from chimera.schemas.messages import SimulateBundle

    d = _deps(request)
    try:
        _check_candidate(d, data)
    except _BundleRejected as exc:
        return Response({"error": "BUNDLE_REJECTED", "detail": f"bundle has {len(exc.report.errors)} lint error(s)",
                         "field": "bundle", "errors": msgspec.to_builtins(exc.report.errors)}, status_code=422)
    _check_window_and_data(data)
    sid = data.simulation_id or f"simreq-{uuid.uuid4().hex[:20]}"
    known = _status(d, sid)
    if known is not None:
        return Response({"simulation_id": sid, "status": known["status"], "poll": f"/v1/simulations/{sid}"},
                        status_code=202)
    by = principal(request).name
    msg = SimulateBundle(simulation_id=sid, bundle_id=data.bundle_id or "", rev=data.rev or 0, bundle=data.bundle,
                         data=tuple(data.data), from_text=data.from_ or "", to_text=data.to or "", eps=data.eps,
                         requested_by=by)
    # The marker first: a GET right after the 202 must answer QUEUED, not 404.
    d.r.set(keys.gw_simulation_queued(sid), json.dumps({"queued_at": d.clock.now_ms(), "requested_by": by}),
            ex=QUEUED_TTL_S)
    d.producer.publish(keys.CFG_COMMANDS, msg, idempotency_key=sid, correlation_id=f"user:{by}")
    audit_detail(request, simulation_id=sid, bundle_id=data.bundle_id or "(inline)", rev=data.rev or 0)
    return Response({"simulation_id": sid, "status": "QUEUED", "poll": f"/v1/simulations/{sid}"}, status_code=202)


def _status(d, sid: str) -> dict | None:
    doc = d.store.get(C.SIMULATIONS, sid)
    if doc is not None:
        return doc
    raw = d.r.get(keys.gw_simulation_queued(sid))
    if raw is None:
        return None
    return {"simulation_id": sid, "status": "QUEUED", **json.loads(raw)}


@get("/v1/simulations/{simulation_id:str}", **spec("read", 404))
def simulation_get(request: Request, simulation_id: FromPath[str]) -> dict:
    """``status`` QUEUED (accepted, S10 has not started), RUNNING, DONE (``kpis``: rows ``{kpi, active,
    candidate}``, ``sensitivity``, ``robustness``) or FAILED (``error``)."""
    return found(_status(_deps(request), simulation_id), "simulation", simulation_id)


# --- backtests (issue #12) ---------------------------------------------------------------------------


@get("/v1/backtests/{run_id:str}", **spec("read", 404))
def backtest_get(request: Request, run_id: FromPath[str]) -> dict:
    """One ``chimera backtest`` run: bundle, data spec and hash, fill and fee model, KPIs, checks."""
    return found(_deps(request).store.get(C.BACKTEST_RUNS, run_id), "backtest run", run_id)


@get("/v1/backtests/{run_id:str}/trades", **spec("read", 400, 404))
def backtest_trades(request: Request, run_id: FromPath[str], limit: Limit = 500,
                    after: Annotated[int, QueryParameter(name="after", ge=0, le=10**9, description=(
                        "page on: the last trade number (n) already read"))] = 0) -> dict:
    """The run's round trips in order (``n`` from 1); ``next_after`` pages on when more are left."""
    d = _deps(request)
    found(d.store.get(C.BACKTEST_RUNS, run_id), "backtest run", run_id)
    docs = d.store.query(C.BACKTEST_TRADES, {"run_id": run_id, "n": (">", after)}, order_by="n", limit=limit + 1)
    more = len(docs) > limit
    docs = docs[:limit]
    return {"run_id": run_id, "items": docs, "count": len(docs),
            "next_after": docs[-1]["n"] if more and docs else None}


# --- account risk (issue #16 item 5) -------------------------------------------------------------------

AccountId = Annotated[str | None, QueryParameter(name="account_id", min_length=1, max_length=64,
                                                 pattern=r"^[A-Za-z0-9:_.-]+$")]


@get("/v1/account-snapshots", **spec("read", 400))
def account_snapshots(request: Request, account_id: AccountId = None,
                      trade_date: Annotated[str | None, QueryParameter(
                          name="trade_date", pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD (UTC)")] = None,
                      kind: Annotated[str | None, QueryParameter(
                          name="kind", pattern=r"^(OPEN|CLOSE|INTERVAL)$",
                          description="OPEN (the day's first), CLOSE (its latest), INTERVAL")] = None,
                      limit: Limit = 500) -> dict:
    """Equity, margin and positions sampled by the risk role, oldest first."""
    from chimera.risk import snapshots

    docs = snapshots.query(_deps(request).store, account_id=account_id, trade_date_=trade_date, kind=kind,
                           limit=limit)
    return {"items": docs, "count": len(docs)}


@get("/v1/breakers", **spec("read", 400))
def breakers(request: Request, account_id: AccountId = None) -> dict:
    """The daily drawdown circuit breaker of every account (or one): level OK|SOFT|HARD, trade_date,
    opening equity, drawdown, flattened positions; ``events``: its audit of the same accounts."""
    from chimera.risk import snapshots

    store = _deps(request).store
    docs = snapshots.breaker_states(store, account_id)
    return {"items": docs, "count": len(docs), "events": snapshots.breaker_events(store, account_id, limit=100)}


RESEARCH_ROUTES = [simulate, simulation_get, backtest_get, backtest_trades, account_snapshots, breakers]
