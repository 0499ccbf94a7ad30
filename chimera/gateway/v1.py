"""/v1 routes beyond the order/ops set in routes.py: sign-in, every service's main API (seed 003)
as thin producers, approvals, reads, config and the dead-letter stream.

A route whose service is not built yet answers 501 naming it (``not_built``): never a made-up result.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from chimera.gateway import approvals
from chimera.gateway.audit import redact
from chimera.gateway.errors import ApiError, found, not_found
from chimera.gateway.rbac import PUBLIC, SELF, principal
from chimera.gateway.routes import Id, Limit, Symbol, Text, _deps, audit_detail, one_account, spec
from chimera.schemas.messages import Decide, ManagePositions, RecomputeFeatures, Side
from chimera.store import collections as C
from chimera.streams import keys

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Ms = Annotated[int, msgspec.Meta(ge=0, le=10**14)]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Name
    password: Password


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    old_password: Password
    new_password: Password


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class DecideBody(msgspec.Struct, forbid_unknown_fields=True):
    symbol: Symbol
    side: Side | None = None
    signal_id: Id | None = None
    account_id: Id = "main"


class RecomputeBody(msgspec.Struct, forbid_unknown_fields=True):
    symbol: Symbol
    start_ms: Ms
    end_ms: Ms


class ManageBody(msgspec.Struct, forbid_unknown_fields=True):
    symbol: Annotated[str, msgspec.Meta(max_length=20, pattern=r"^[A-Z0-9]*$")] = ""
    pos_id: Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[A-Za-z0-9:_.-]*$")] = ""
    account_id: Id = "main"


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True):
    note: Text = ""


# --- sign-in ---------------------------------------------------------------------------------------


@post("/v1/auth/login", status_code=200, **spec(PUBLIC, 400, 401, 423, 429))
def login(request: Request, data: JSONBody[LoginBody]) -> Response:
    out = _deps(request).auth.login(data.username, data.password)
    return Response(out, status_code=200)


@post("/v1/auth/refresh", status_code=200, **spec(PUBLIC, 400, 401))
def refresh(request: Request, data: JSONBody[RefreshBody]) -> Response:
    return Response(_deps(request).auth.refresh(data.refresh_token), status_code=200)


@post("/v1/auth/logout", status_code=200, **spec(SELF, unsafe=True))
def logout(request: Request) -> Response:
    d = _deps(request)
    p = principal(request)
    if p.kind == "human":
        _, claims = d.auth.decode(_bearer(request) or request.cookies.get("chimera_session", ""))
        d.auth.revoke(p, family=claims.get("fam", ""))
    resp = Response({"revoked": True}, status_code=200)
    resp.delete_cookie("chimera_session")
    return resp


def _bearer(request: Request) -> str | None:
    h = request.headers.get("authorization", "")
    return h[7:].strip() if h.lower().startswith("bearer ") else None


@post("/v1/auth/password", status_code=200, **spec(SELF, unsafe=True))
def change_password(request: Request, data: JSONBody[PasswordBody]) -> dict:
    """The first admin's one-time password must be replaced this way (``must_change`` at login)."""
    _deps(request).auth.change_password(principal(request), data.old_password, data.new_password)
    return {"changed": True}


@get("/v1/auth/me", **spec(SELF))
def whoami(request: Request) -> dict:
    p = principal(request)
    return {"name": p.name, "role": p.role, "kind": p.kind}


# --- every service's main API (seed 003) -------------------------------------------------------------


@post("/v1/decide", status_code=HTTP_202_ACCEPTED, **spec("strategy.decide", unsafe=True))
def decide(request: Request, data: JSONBody[DecideBody]) -> dict:
    d = _deps(request)
    one_account(data.account_id)
    signal_id = data.signal_id or f"gw-decide-{uuid.uuid4().hex[:20]}"
    d.producer.publish(keys.STRAT_COMMANDS, Decide(signal_id=signal_id, symbol=data.symbol, side=data.side),
                       idempotency_key=signal_id, account_id=data.account_id)
    audit_detail(request, signal_id=signal_id, symbol=data.symbol)
    return {"signal_id": signal_id, "poll": f"/v1/signals?symbol={data.symbol}"}


@post("/v1/features/recompute", status_code=HTTP_202_ACCEPTED, **spec("features.recompute", unsafe=True))
def features_recompute(request: Request, data: JSONBody[RecomputeBody]) -> dict:
    if data.end_ms <= data.start_ms:
        raise ApiError(422, "RULE_VIOLATED", "end_ms must be after start_ms", field="end_ms")
    d = _deps(request)
    job_id = f"recompute-{uuid.uuid4().hex[:20]}"
    d.producer.publish(keys.FEAT_COMMANDS, RecomputeFeatures(symbol=data.symbol, start_ms=data.start_ms,
                                                             end_ms=data.end_ms), idempotency_key=job_id)
    audit_detail(request, job_id=job_id, symbol=data.symbol)
    return {"job_id": job_id}


@post("/v1/positions/manage", status_code=HTTP_202_ACCEPTED, **spec("positions.manage", unsafe=True))
def positions_manage(request: Request, data: JSONBody[ManageBody]) -> dict:
    d = _deps(request)
    one_account(data.account_id)
    job_id = f"manage-{uuid.uuid4().hex[:20]}"
    d.producer.publish(keys.POS_COMMANDS, ManagePositions(symbol=data.symbol, pos_id=data.pos_id),
                       idempotency_key=job_id, account_id=data.account_id)
    audit_detail(request, job_id=job_id, pos_id=data.pos_id)
    return {"job_id": job_id}


@post("/v1/auto-transfer/trigger", status_code=HTTP_202_ACCEPTED, **spec("positions.manage"))
def auto_transfer_trigger(request: Request) -> dict:
    """S6's management tick runs the auto-transfer check; a top-up it finds waits in /v1/approvals."""
    d = _deps(request)
    job_id = f"autotransfer-{uuid.uuid4().hex[:20]}"
    d.producer.publish(keys.POS_COMMANDS, ManagePositions(), idempotency_key=job_id)
    audit_detail(request, job_id=job_id)
    return {"job_id": job_id, "poll": "/v1/approvals?status=PENDING"}


NOT_BUILT_TAG = "not-built"  # OpenAPI tag of the routes that answer 501 until their service exists


def nospec(perm: str, *codes: int) -> dict:
    """Routes that only answer 501 touch nothing: no worker thread needed."""
    return spec(perm, *codes) | {"sync_to_thread": False, "tags": [NOT_BUILT_TAG]}


def not_built(what: str, service: str) -> ApiError:
    return ApiError(501, "NOT_IMPLEMENTED", f"{what}: {service} is not built yet; nothing was done")


def _permanent(fn, *args, field: str = "body", **kw):
    """A service's PermanentError is the caller's mistake: 400 naming the field."""
    from chimera.errors import PermanentError

    try:
        return fn(*args, **kw)
    except PermanentError as exc:
        raise ApiError(400, "INVALID_REQUEST", str(exc), field=field) from None


@post("/v1/labels/backfill", status_code=HTTP_202_ACCEPTED, **spec("research.run", unsafe=True))
def labels_backfill(request: Request, h: FromQuery[Literal[12, 24, 36]] = 24) -> dict:
    from chimera.handlers.labels.role import request_backfill

    request_id = uuid.uuid4().hex[:20]
    stream, msg, key = _permanent(request_backfill, h, request_id, principal(request).name, field="h")
    _deps(request).producer.publish(stream, msg, idempotency_key=key)
    audit_detail(request, request_id=request_id, h=h)
    return {"request_id": request_id, "poll": f"/v1/labels?h={h}"}


@post("/v1/autopsy/{trade_id:str}", status_code=HTTP_202_ACCEPTED, **spec("research.run", unsafe=True))
def autopsy_run(request: Request, trade_id: FromPath[str]) -> dict:
    from chimera.handlers.autopsy.generate import request_autopsy

    stream, msg, key = _permanent(request_autopsy, trade_id, uuid.uuid4().hex[:20], principal(request).name,
                                  field="trade_id")
    _deps(request).producer.publish(stream, msg, idempotency_key=key)
    audit_detail(request, trade_id=trade_id)
    return {"trade_id": trade_id, "poll": f"/v1/autopsy/{trade_id}"}


@get("/v1/autopsy/{trade_id:str}", **spec("read", 404))
def autopsy_get(request: Request, trade_id: FromPath[str]) -> dict:
    return found(_deps(request).store.get(C.AUTOPSY_REPORTS, trade_id), "autopsy report", trade_id)


class ExperimentBody(msgspec.Struct, forbid_unknown_fields=True):
    family: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    symbol: Symbol
    start_ms: Ms
    end_ms: Ms
    horizon_h: Literal[12, 24, 36] = 12
    train_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 2
    test_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 1
    period_min: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 15
    experiment_id: Id | None = None


@post("/v1/experiments/run", status_code=HTTP_202_ACCEPTED, **spec("research.run", unsafe=True))
def experiments_run(request: Request, data: JSONBody[ExperimentBody]) -> dict:
    from chimera.handlers.experiments.role import request_run
    from chimera.schemas.messages import RunExperiment

    if data.end_ms <= data.start_ms:
        raise ApiError(422, "RULE_VIOLATED", "end_ms must be after start_ms", field="end_ms")
    eid = data.experiment_id or f"exp-{uuid.uuid4().hex[:20]}"
    msg = RunExperiment(experiment_id=eid, family=data.family, symbol=data.symbol, start_ms=data.start_ms,
                        end_ms=data.end_ms, horizon_h=data.horizon_h, train_days=data.train_days,
                        test_days=data.test_days, period_min=data.period_min, requested_by=principal(request).name)
    stream, msg, key = request_run(msg)
    _deps(request).producer.publish(stream, msg, idempotency_key=key)
    audit_detail(request, experiment_id=eid)
    return {"experiment_id": eid, "poll": f"/v1/experiments/{eid}"}


@get("/v1/experiments/{experiment_id:str}", **spec("read", 404))
def experiment_get(request: Request, experiment_id: FromPath[str]) -> dict:
    return found(_deps(request).store.get(C.EXPERIMENTS, experiment_id), "experiment", experiment_id)


def _async(kw: dict) -> dict:
    """spec() for an async handler (no worker-thread flag)."""
    return {k: v for k, v in kw.items() if k != "sync_to_thread"}


# Async on purpose: a sync handler sharing its path with another sync handler (GET /v1/bundles) gets
# wrapped twice by Litestar and answers a coroutine; this one runs the service in a thread itself.
@post("/v1/bundles", status_code=201, **_async(spec("config.write", 409, unsafe=True)))
async def bundles_create(request: Request, data: JSONBody[dict[str, Any]]) -> Response:
    """S10: lint (every error with its position), dry-run, store as DRAFT."""
    import anyio

    from chimera.errors import PermanentError
    from chimera.handlers.config import service

    d = _deps(request)
    by = principal(request).name
    try:
        doc = await anyio.to_thread.run_sync(
            lambda: service.create(d.store, data, now_ms=d.clock.now_ms(), by=by, source="gateway"))
    except service.BundleRejected as exc:
        return Response({"error": "BUNDLE_REJECTED", "detail": str(exc), "field": "body",
                         "errors": msgspec.to_builtins(exc.report.errors)}, status_code=422)
    except PermanentError as exc:
        raise ApiError(409, "CONFLICT", str(exc), field="rev") from None
    audit_detail(request, bundle_id=doc.bundle_id, rev=doc.rev)
    return Response(msgspec.to_builtins(doc), status_code=201)


class PromoteBody(msgspec.Struct, forbid_unknown_fields=True):
    bundle_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    rev: Annotated[int, msgspec.Meta(ge=1)]


@post("/v1/promote", status_code=HTTP_202_ACCEPTED, **spec("config.promote", 404, unsafe=True))
def promote(request: Request, data: JSONBody[PromoteBody]) -> dict:
    """Four eyes: stored as an approval; once another person approves, S10 gets PromoteBundle."""
    from chimera.handlers.config import service

    d = _deps(request)
    if service.get_bundle(d.store, data.bundle_id, data.rev) is None:
        raise not_found("bundle", f"{data.bundle_id}:{data.rev}")
    pid = f"promo-{uuid.uuid4().hex[:20]}"
    doc = approvals.create(d, "PROMOTE", {"promotion_id": pid, "bundle_id": data.bundle_id, "rev": data.rev},
                           principal(request).name)
    audit_detail(request, promotion_id=pid, approval_id=doc["approval_id"])
    return {"promotion_id": pid, "status": "PENDING_APPROVAL", "approval_id": doc["approval_id"]}


# --- reads -----------------------------------------------------------------------------------------


def _read(coll: str):
    def handler(request: Request, limit: Limit = 100) -> dict:
        docs = _deps(request).store.query(coll, limit=limit)
        return {"items": docs, "count": len(docs)}

    return handler


def _reader(path: str, coll: str, name: str):
    h = _read(coll)
    h.__name__ = name
    return get(path, **spec("read", 400), name=name)(h)


READS = [
    _reader("/v1/backtests", C.BACKTEST_RUNS, "list_backtests"),
    _reader("/v1/experiments", C.EXPERIMENTS, "list_experiments"),
    _reader("/v1/autopsies", C.AUTOPSY_REPORTS, "list_autopsies"),
    _reader("/v1/bundles", C.CONFIG_BUNDLES, "list_bundles"),
    _reader("/v1/fills", C.FILLS, "list_fills"),
]


@get("/v1/labels", **spec("read", 400))
def list_labels(request: Request, h: FromQuery[Literal[12, 24, 36]] = 24, limit: Limit = 100) -> dict:
    docs = _deps(request).store.query(f"labels_{h}h", limit=limit)
    return {"items": docs, "count": len(docs)}


@get("/v1/alerts", **spec("read", 400))
def list_alerts(request: Request, level: FromQuery[Literal["INFO", "WARN", "ERROR", "FATAL"] | None] = None,
                alert_state: Annotated[Literal["OPEN", "ACKED", "RESOLVED"] | None, QueryParameter(name="state")] = None,
                limit: Limit = 100) -> dict:
    """S11's alerts (newest occurrence first)."""
    from chimera.handlers.health import alerts

    docs = _permanent(alerts.list_alerts, _deps(request).store, state=alert_state, level=level, limit=limit)
    return {"items": docs, "count": len(docs)}


def _alert_move(request: Request, key: str, verb: str) -> dict:
    from chimera.handlers.health import alerts

    d = _deps(request)
    fn = alerts.acknowledge if verb == "ack" else alerts.resolve
    try:
        doc = fn(d.store, key, by=principal(request).name, now_ms=d.clock.now_ms())
    except alerts.AlertNotFound:
        raise not_found("alert", key) from None
    except alerts.AlertStateError as exc:
        raise ApiError(409, "ALERT_STATE", str(exc)) from None
    audit_detail(request, alert=key, verb=verb)
    return doc


@post("/v1/alerts/{key:str}/ack", status_code=200, **spec("alerts.handle", 404, 409))
def ack_alert(request: Request, key: FromPath[str]) -> dict:
    return _alert_move(request, key, "ack")


@post("/v1/alerts/{key:str}/resolve", status_code=200, **spec("alerts.handle", 404, 409))
def resolve_alert(request: Request, key: FromPath[str]) -> dict:
    return _alert_move(request, key, "resolve")


@get("/v1/active", **spec("read"))
def active_config(request: Request) -> dict:
    d = _deps(request)
    docs = d.store.query(C.CONFIG_ACTIVE, limit=10)
    return {"items": [redact(x) for x in docs], "count": len(docs)}


@get("/v1/config", **spec("config.read"))
def config(request: Request) -> dict:
    """The gateway's settings and the active bundle, every secret-looking field redacted."""
    d = _deps(request)
    s = d.settings
    settings = {k: getattr(s, k) for k in ("redis_cluster", "venue", "venue_url", "accounts_file", "symbols",
                                           "max_attempts", "claim_idle_ms", "block_ms", "lock_ttl_ms",
                                           "lease_ttl_ms", "log_level")}
    # URLs may carry passwords (redis://:pw@host, arangodb://user:pw@...): only scheme and host.
    for k in ("redis_url", "store_url", "objects_url"):
        settings[k] = _strip_credentials(getattr(s, k))
    settings["extra"] = redact(dict(s.extra))
    active = [redact(x) for x in d.store.query(C.CONFIG_ACTIVE, limit=10)]
    return {"settings": settings, "active": active, "auth": {"access_ttl_s": d.auth.cfg.access_ttl_s,
                                                               "rate_per_min": d.auth.cfg.rate_per_min,
                                                               "jwt_secret": "***"}}


def _strip_credentials(url: str) -> str:
    from urllib.parse import urlparse

    u = urlparse(url)
    if u.password or u.username:
        return u._replace(netloc=f"***@{u.hostname}" + (f":{u.port}" if u.port else "")).geturl()
    return url


# --- approvals ---------------------------------------------------------------------------------------


@get("/v1/approvals", **spec("read", 400))
def list_approvals(request: Request, status: FromQuery[Literal["PENDING", "APPROVED", "REJECTED", "EXPIRED",
                                                                "EXECUTED", "FAILED"] | None] = None,
                   limit: Limit = 100) -> dict:
    docs = approvals.listing(_deps(request), status, limit)
    return {"items": docs, "count": len(docs)}


@get("/v1/approvals/{approval_id:str}", **spec("read", 404))
def get_approval(request: Request, approval_id: FromPath[str]) -> dict:
    return approvals.get(_deps(request), approval_id)


@post("/v1/approvals/{approval_id:str}/approve", status_code=200, **spec("approvals.decide", 404, 409, unsafe=True))
def approve(request: Request, approval_id: FromPath[str], data: JSONBody[DecisionBody | None] = None) -> Response:
    audit_detail(request, approval_id=approval_id, decision="approve")
    doc = approvals.decide(_deps(request), approval_id, principal(request), True, (data or DecisionBody()).note)
    return Response(doc, status_code=200)


@post("/v1/approvals/{approval_id:str}/reject", status_code=200, **spec("approvals.decide", 404, 409, unsafe=True))
def reject(request: Request, approval_id: FromPath[str], data: JSONBody[DecisionBody | None] = None) -> Response:
    audit_detail(request, approval_id=approval_id, decision="reject")
    doc = approvals.decide(_deps(request), approval_id, principal(request), False, (data or DecisionBody()).note)
    return Response(doc, status_code=200)


# --- dead letters --------------------------------------------------------------------------------------


def dlq_items(r, limit: int) -> list[dict[str, Any]]:
    from chimera.ops.streams_admin import dlq_entries

    return [{"id": eid, "stream": dl.stream, "group": dl.group, "entry_id": dl.entry_id, "reason": dl.reason,
             "attempts": dl.attempts, "failed_at": dl.failed_at} for eid, dl in dlq_entries(r, limit)]


@get("/v1/dlq", **spec("dlq.read", 400))
def list_dlq(request: Request, limit: Limit = 100) -> dict:
    items = dlq_items(_deps(request).r, limit)
    return {"items": items, "count": len(items)}


@post("/v1/dlq/{entry_id:str}/requeue", status_code=200, **spec("dlq.requeue", 404))
def requeue_dlq(request: Request, entry_id: FromPath[str]) -> Response:
    from chimera.ops.streams_admin import dlq_requeue

    try:
        new_id = dlq_requeue(_deps(request).r, entry_id)
    except KeyError:
        raise not_found("dead letter", entry_id) from None
    except Exception as exc:  # noqa: BLE001 - a malformed stream id is the caller's error
        raise ApiError(404, "NOT_FOUND", f"dead letter {entry_id!r}: {exc}") from None
    audit_detail(request, dlq_id=entry_id, requeued_as=new_id)
    return Response({"requeued_as": new_id}, status_code=200)


V1_ROUTES = [login, refresh, logout, change_password, whoami, decide, features_recompute, positions_manage, auto_transfer_trigger,
             labels_backfill, autopsy_run, autopsy_get, experiments_run, experiment_get, bundles_create, promote, *READS, list_labels,
             list_alerts, ack_alert, resolve_alert, active_config, config, list_approvals, get_approval, approve, reject, list_dlq,
             requeue_dlq]
