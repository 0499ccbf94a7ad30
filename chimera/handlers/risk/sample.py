"""One equity sample of one account: snapshot it, step its breaker, flatten on a HARD trip, re-arm.

Order of writes, so a redelivery after a crash repeats nothing harmful: snapshots (idempotent by
key) → audit documents (``insert_if_absent``) → the FLATTEN intents (deterministic ids: S4 places
each once) → the breaker document last. Events (``ops:events`` + ``alerts``) carry deterministic
idempotency keys, so consumers drop a re-published one.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger
from msgspec.structs import replace

from chimera.errors import PermanentError, RetryableError
from chimera.risk import breaker, snapshots
from chimera.schemas.documents.account_risk import BreakerDoc, BreakerEvent, from_doc, to_doc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Alert, OpsEvent, OrderIntent, SubmitOrder, TimerFired
from chimera.store.collections import ACCOUNT_RISK, ACCOUNT_RISK_EVENTS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

TIMER = "risk.sample"
SAMPLE_INTERVAL_MS = 60_000
SNAPSHOT_INTERVAL_MS = 300_000
ACTOR = "risk-breaker"
ALERT_LEVEL = {"TRIPPED_SOFT": "WARN", "TRIPPED_HARD": "CRITICAL", "RESET": "INFO"}


def account_of(env: Envelope) -> str:
    p = env.payload
    return (p.data.get("account_id") if isinstance(p, TimerFired) else "") or env.account_id or "main"


def _param(ctx: Context, account_id: str, name: str, default: int) -> int:
    v = breaker.account_section(ctx.config, account_id).get(name, default)
    try:
        v = int(v)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"bundle account_risk.{name}={v!r}: expected an integer (ms)") from exc
    if v <= 0:
        raise PermanentError(f"bundle account_risk.{name}={v}: must be > 0")
    return v


def arm(account_id: str, due_ms: int) -> Emit:
    return Emit(keys.HEALTH_TIMERS, TimerFired(name=TIMER, due_ms=due_ms, data={"account_id": account_id}),
                f"{TIMER}:{account_id}:{due_ms}", account_id=account_id, due_ms=due_ms,
                timer_key=keys.risk_sample_timer(account_id))


def accounts(ctx: Context) -> list[str]:
    """The accounts to sample: none while the active bundle has no ``account_risk`` section (opt-in: a
    desk without it never has its venue polled), else ``account_risk.accounts_sampled``, else every
    enabled account of the accounts file."""
    if not breaker.section(ctx.config):
        return []
    listed = breaker.section(ctx.config).get("accounts_sampled")
    if listed:
        return [str(a) for a in listed]
    settings = ctx.settings
    if settings is None:
        return ["main"]
    from chimera.venues.accounts import load_accounts

    return [a.account_id for a in load_accounts(settings.accounts_file or None, settings.venue) if a.enabled]


def on_start(ctx: Context) -> list[Emit]:
    now = ctx.now_ms()
    return [arm(a, now) for a in accounts(ctx)]


def on_sample(env: Envelope, ctx: Context) -> list[Emit]:
    p: TimerFired = env.payload
    if p.name != TIMER:
        raise PermanentError(f"role risk has no timer named {p.name!r}")
    account = account_of(env)
    now = ctx.now_ms()
    if account not in accounts(ctx):  # the bundle no longer samples it: let the timer lapse
        return []
    try:
        interval = _param(ctx, account, "sample_interval_ms", SAMPLE_INTERVAL_MS)
        return [arm(account, now + interval), *sample(ctx, account, now)]
    except (RetryableError, PermanentError) as exc:
        # A blind breaker is a risk of its own: say so, and keep sampling (the timer must not lapse
        # because the venue blinked or the bundle has a bad value; a dead letter would end the loop).
        logger.error("account {} not sampled: {}", account, exc)
        level = "WARN" if isinstance(exc, RetryableError) else "ERROR"
        alert = Alert(level=level, code="ACCOUNT_SAMPLE_FAILED", message=f"account {account}: the breaker could "
                      f"not sample equity: {exc}"[:500], context={"dedup_key": f"breaker-sample:{account}",
                                                                  "account_id": account})
        return [arm(account, now + SAMPLE_INTERVAL_MS),
                Emit(keys.ALERTS, alert, f"breaker-sample:{account}:{now}", account_id=account)]


def sample(ctx: Context, account: str, now: int) -> list[Emit]:
    """Sample ``account`` at clock time ``now``; what to publish (audit events, FLATTEN commands)."""
    store = ctx.store
    live = snapshots.open_positions(store, account)
    snap = replace(snapshots.read_account(ctx.venues.get(account), account, now), open_positions=len(live))
    first = snapshots.record(store, snap, _param(ctx, account, "snapshot_interval_ms", SNAPSHOT_INTERVAL_MS))
    old = from_doc(store.get(ACCOUNT_RISK, account), BreakerDoc)
    st = breaker.step(old, account, snap.equity, now, breaker.thresholds(ctx.config, account), first.equity)
    doc, out = st.doc, []
    if doc.level == breaker.HARD:
        doc, out = _flatten(doc, live, account)
    events = [replace(e, flattened=doc.flattened) if e.kind == "TRIPPED_HARD" else e for e in st.events]
    for e in events:
        store.insert_if_absent(ACCOUNT_RISK_EVENTS, _event_key(e), to_doc(e))
        out += _publish(e)
    store.upsert(ACCOUNT_RISK, account, to_doc(doc))
    return out


def _event_key(e: BreakerEvent) -> str:
    return f"{e.account_id}:{e.trade_date}:{e.kind}"


def _publish(e: BreakerEvent) -> list[Emit]:
    detail = {"account_id": e.account_id, "trade_date": e.trade_date, "previous": e.previous, "level": e.level,
              "opening_equity": str(e.opening_equity), "equity": str(e.equity),
              "drawdown_usdt": str(e.drawdown_usdt), "drawdown_pct": str(e.drawdown_pct), "threshold": e.threshold,
              "at": str(e.at)}
    if e.flattened:
        detail["flattened"] = ",".join(e.flattened)
    key = f"breaker:{_event_key(e)}"
    logger.warning("account {} breaker {} ({} -> {}): drawdown {} USDT ({}%)", e.account_id, e.kind, e.previous,
                   e.level, e.drawdown_usdt, e.drawdown_pct)
    message = (f"account {e.account_id} breaker {e.kind}: equity {e.equity} vs opening {e.opening_equity} "
               f"(drawdown {e.drawdown_usdt} USDT, {e.drawdown_pct}%) {e.threshold}").strip()
    return [Emit(keys.OPS_EVENTS, OpsEvent(kind=f"BREAKER_{e.kind}", actor=ACTOR, detail=detail), key,
                 account_id=e.account_id, event_time=e.at),
            Emit(keys.ALERTS, Alert(level=ALERT_LEVEL[e.kind], code=f"BREAKER_{e.kind}", message=message,
                                    context={"dedup_key": f"breaker:{e.account_id}", **detail}),
                 f"{key}:alert", account_id=e.account_id, event_time=e.at)]


def flatten_intent_id(pos_id: str, trade_date: str) -> str:
    return f"{pos_id}:brk{trade_date.replace('-', '')}"


def _flatten(doc: BreakerDoc, live: list[dict], account: str) -> tuple[BreakerDoc, list[Emit]]:
    """A reduce-only MARKET FLATTEN through S4 for every open futures position not yet sent one today.

    S6 books the close from S4's result like any other exit (``pos_id`` on the intent). A position
    that opens after the trip (an entry already in flight) is flattened by the next sample.
    """
    out, done = [], list(doc.flattened)
    for pos in live:
        qty = Decimal(str(pos.get("qty") or 0))
        if pos.get("state") != "ACTIVE" or qty <= 0 or pos["_key"] in done or pos.get("market", "FUT") != "FUT":
            continue
        intent_id = flatten_intent_id(pos["_key"], doc.trade_date)
        intent = OrderIntent(intent_id=intent_id, market="FUT", symbol=pos["symbol"],
                             side="SELL" if pos.get("side") == "BUY" else "BUY", qty=qty, exec_policy="MARKET",
                             purpose="FLATTEN", reduce_only=True, pos_id=pos["_key"],
                             leverage=int(pos.get("leverage") or 20))
        out.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent_id, account_id=account))
        done.append(pos["_key"])
    return replace(doc, flattened=tuple(done)), out

