"""The ``alerts`` collection: one document per de-duplication key, with a lifecycle
OPEN → ACKED → RESOLVED (a new occurrence of a RESOLVED key opens it again).

Levels are INFO / WARN / ERROR / FATAL (an ``Alert`` message's CRITICAL is stored as FATAL). The
key is ``context["dedup_key"]`` when the producer gives one, else ``<code>:<account>[:<symbol>]``:
S5 raising the same ``RECONCILE_DEGRADED`` every run is one alert whose ``count`` grows.

An alert that opens, reopens or escalates to a level routed in ``notifier.routes`` (default:
ERROR and FATAL to every configured channel) becomes one ``Notify`` per channel on
``notify:{outbox}``, with ``event_id = alert:<the Alert message's idempotency key>``: a redelivered
Alert re-emits the same Notify, which the notifier de-duplicates per (event, channel).

``acknowledge`` / ``resolve`` / ``list_alerts`` are the service functions the gateway calls
(``GET /v1/alerts``, ``POST /v1/alerts/<key>/ack|resolve``).
"""

from __future__ import annotations

from chimera.errors import PermanentError
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Alert, OpsEvent
from chimera.schemas.observability import Notify
from chimera.store.collections import ALERTS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

LEVELS = ("INFO", "WARN", "ERROR", "FATAL")
RANK = {name: i for i, name in enumerate(LEVELS)}
OPEN, ACKED, RESOLVED = "OPEN", "ACKED", "RESOLVED"
DEFAULT_ROUTED = ("ERROR", "FATAL")

# ops:events kinds that deserve an operator's attention, and at which level; others are audit only.
OPS_LEVELS = {"WS_RECONNECT": "WARN", "DATA_GAP": "WARN", "KILL_SWITCH_SET": "WARN", "TRANSFER_FAILED": "ERROR"}


class AlertNotFound(PermanentError):
    pass


class AlertStateError(PermanentError):
    pass


def level_of(raw: str) -> str:
    level = "FATAL" if raw.upper() == "CRITICAL" else raw.upper()
    if level not in RANK:
        raise PermanentError(f"alert level {raw!r}: expected one of {', '.join(LEVELS)}")
    return level


def dedup_key(code: str, account_id: str, context: dict[str, str]) -> str:
    if context.get("dedup_key"):
        return context["dedup_key"]
    sym = context.get("symbol")
    return f"{code}:{account_id}" + (f":{sym}" if sym else "")


def record(ctx: Context, *, level: str, code: str, message: str, context: dict[str, str], account_id: str,
           occurrence: str) -> list[Emit]:
    """Open, count or escalate the alert; the Notify emits for what became worth telling someone."""
    level = level_of(level)
    key = dedup_key(code, account_id, context)
    now = ctx.now_ms()
    doc = ctx.store.get(ALERTS, key)
    if doc is not None and doc.get("last_occurrence") == occurrence:
        # A redelivery after a crash between this write and the ack: re-emit what the first pass did.
        return _notify(ctx, doc, occurrence) if doc.get("notified_occurrence") == occurrence else []
    if doc is None or doc["state"] == RESOLVED:
        doc = {"key": key, "code": code, "level": level, "message": message, "context": dict(context),
               "account_id": account_id, "state": OPEN, "count": 1, "first_seen": now, "last_seen": now,
               "opened_at": now, "acked_by": None, "acked_at": None, "resolved_by": None, "resolved_at": None,
               "reopened": (doc or {}).get("reopened", -1) + 1 if doc else 0}
        tell = True
    else:
        doc.pop("_key", None)
        tell = RANK[level] > RANK[doc["level"]]
        doc.update(count=doc["count"] + 1, last_seen=now, message=message,
                   level=level if RANK[level] > RANK[doc["level"]] else doc["level"])
    doc["last_occurrence"] = occurrence
    if tell and doc["level"] in _routes(ctx):
        doc["notified_occurrence"] = occurrence
    ctx.store.upsert(ALERTS, key, doc)
    return _notify(ctx, doc, occurrence) if doc.get("notified_occurrence") == occurrence else []


def _routes(ctx: Context) -> dict[str, list[str]]:
    cfg = (ctx.config.get("notifier") if ctx.config is not None else None) or {}
    channels = list((cfg.get("channels") or {}).keys())
    routes = cfg.get("routes")
    if routes is None:
        return {lvl: channels for lvl in DEFAULT_ROUTED} if channels else {}
    return {level_of(k): list(v) for k, v in routes.items() if v}


def _notify(ctx: Context, doc: dict, occurrence: str) -> list[Emit]:
    out = []
    for channel in _routes(ctx).get(doc["level"], []):
        text = f"[{doc['level']}] {doc['code']}: {doc['message']} (x{doc['count']}, key {doc['key']})"
        n = Notify(event_id=f"alert:{occurrence}", channel=channel, text=text, level=doc["level"],
                   data={"alert_key": doc["key"], "code": doc["code"], "account_id": doc["account_id"]})
        out.append(Emit(keys.NOTIFY_OUTBOX, n, f"alert:{occurrence}:{channel}", doc["account_id"]))
    return out


def on_alert(env: Envelope, ctx: Context) -> list[Emit]:
    p: Alert = env.payload
    return record(ctx, level=p.level, code=p.code, message=p.message, context=dict(p.context),
                  account_id=env.account_id, occurrence=env.idempotency_key)


def on_ops_event(env: Envelope, ctx: Context) -> list[Emit]:
    p: OpsEvent = env.payload
    level = OPS_LEVELS.get(p.kind)
    if level is None:
        return []
    context = {k: str(v) for k, v in p.detail.items()}
    context.setdefault("dedup_key", f"ops:{p.kind}:{env.account_id}")
    message = f"{p.kind} by {p.actor or 'system'}: " + ", ".join(f"{k}={v}" for k, v in sorted(p.detail.items()))
    return record(ctx, level=level, code=p.kind, message=message[:500], context=context,
                  account_id=env.account_id, occurrence=env.idempotency_key)


# --- service functions (gateway) -------------------------------------------------------------------


def list_alerts(store, *, state: str | None = None, level: str | None = None, limit: int = 100) -> list[dict]:
    where: dict = {}
    if state:
        if state.upper() not in (OPEN, ACKED, RESOLVED):
            raise PermanentError(f"state {state!r}: expected OPEN, ACKED or RESOLVED")
        where["state"] = state.upper()
    if level:
        where["level"] = level_of(level)
    docs = store.query(ALERTS, where or None)
    return sorted(docs, key=lambda d: -d["last_seen"])[:limit]


def acknowledge(store, key: str, *, by: str, now_ms: int) -> dict:
    """OPEN → ACKED (someone is on it; repeats still count). Acking an ACKED alert is a no-op."""
    return _move(store, key, {OPEN: ACKED, ACKED: ACKED}, {"acked_by": by, "acked_at": now_ms}, "acknowledge")


def resolve(store, key: str, *, by: str, now_ms: int) -> dict:
    """OPEN | ACKED → RESOLVED; the next occurrence opens it again (and notifies again)."""
    return _move(store, key, {OPEN: RESOLVED, ACKED: RESOLVED, RESOLVED: RESOLVED},
                 {"resolved_by": by, "resolved_at": now_ms}, "resolve")


def _move(store, key: str, table: dict[str, str], patch: dict, verb: str) -> dict:
    for _ in range(5):  # compare-and-set: a concurrent occurrence may bump the document in between
        doc = store.get(ALERTS, key)
        if doc is None:
            raise AlertNotFound(f"alert {key!r} not found")
        target = table.get(doc["state"])
        if target is None:
            raise AlertStateError(f"cannot {verb} alert {key!r} in state {doc['state']}")
        if target == doc["state"]:
            return doc
        if store.update_if(ALERTS, key, {"state": target, **patch}, {"state": doc["state"], "count": doc["count"]}):
            return store.get(ALERTS, key)
    raise AlertStateError(f"alert {key!r} kept changing; try again")
