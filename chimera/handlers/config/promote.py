"""S10's promote: guardrails, then the staged rollout driven by its own analysis timers.

Every step is a compare-and-set on ``promotions/<id>.state`` along ``rollout.TRANSITIONS`` and is
appended to the document's ``steps``. A live stage activates a rev (``config_active`` switches and a
``ConfigActivated`` goes to ``cfg:events``, which every worker follows); a Failed analysis switches
back to the previous (bundle_id, rev) in the same handler call, so a rollback lands within one
analysis interval of the stage's last good tick.
"""

from __future__ import annotations

import msgspec

from chimera.errors import PermanentError
from chimera.handlers.config import dryrun, rollout, service
from chimera.handlers.config.metrics import jsonable, stage_metrics
from chimera.schemas.documents.config import BundleDoc, PromotionDoc, PromotionStep
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import ConfigActivated, PromoteBundle, PromotionCommand, TimerFired
from chimera.store.collections import CONFIG_BUNDLES, PROMOTIONS, SHADOW_DECISIONS, SIGNALS
from chimera.streams import keys
from chimera.streams.producer import CancelTimer, Emit

TIMER = "s10.analyze"


def timer_key(pid: str) -> str:
    return f"s10:analyze:{pid}"


def lock_scope(_env: Envelope) -> str:
    """One scope for every rollout step: "is another promotion live?" and the step itself are then
    atomic across s10 replicas (promotions are rare; nothing to gain from finer locks)."""
    return "s10:rollout"


def _load(store, pid: str) -> PromotionDoc | None:
    doc = store.get(PROMOTIONS, pid)
    return msgspec.convert({k: v for k, v in doc.items() if k != "_key"}, PromotionDoc, strict=False) if doc else None


def _live_promotion(store, exclude: str) -> str:
    rows = store.query(PROMOTIONS, {"state": ("in", sorted(rollout.LIVE))})
    return next((r["_key"] for r in rows if r["_key"] != exclude), "")


def _robustness(store, bundle_id: str, rev: int) -> float | None:
    sim = service.latest_simulation(store, bundle_id, rev)
    r = (sim or {}).get("robustness")
    return None if r is None else float(r)


def on_promote(env: Envelope, ctx) -> list:
    msg: PromoteBundle = env.payload
    store, now = ctx.store, ctx.now_ms()
    if store.get(PROMOTIONS, msg.promotion_id) is not None:
        return []  # a redelivered command: the rollout already runs on its own timers
    cand = service.get_bundle(store, msg.bundle_id, msg.rev)
    if cand is None:
        raise PermanentError(f"promote {msg.promotion_id}: bundle {msg.bundle_id}:{msg.rev} is not stored")
    prev = service.active(store) or {"bundle_id": "", "rev": 0}
    _ref, prev_body = service.active_body(store)
    gov = rollout.Governance.from_bundle(prev_body)
    real = getattr(ctx.settings, "venue", "paper") != "paper" or bool((prev_body.get("governance") or {})
                                                                      .get("real_capital"))
    ok, reasons, figures = rollout.guardrails(gov, cand.get("dry_run"), _robustness(store, msg.bundle_id, msg.rev))
    if not prev["bundle_id"]:
        reasons.append("no active bundle: a rollout needs an incumbent to compare with and roll back to")
    if (prev["bundle_id"], prev["rev"]) == (msg.bundle_id, msg.rev):
        reasons.append(f"{msg.bundle_id}:{msg.rev} is already active")
    if real and not msg.approved_by:
        reasons.append("real capital: the promotion needs a second person's approval (--approved-by)")
    if msg.approved_by and msg.approved_by == msg.requested_by:
        reasons.append("the approver must be another person than the requester")
    busy = _live_promotion(store, msg.promotion_id)
    if busy:
        reasons.append(f"promotion {busy} is still running")
    doc = PromotionDoc(promotion_id=msg.promotion_id, bundle_id=msg.bundle_id, rev=msg.rev,
                       previous_bundle_id=prev["bundle_id"], previous_rev=int(prev["rev"]), state="PENDING",
                       approved_by=msg.approved_by, requested_by=msg.requested_by, real_capital=real,
                       guardrails={**figures, "reasons": reasons}, created_at=now, updated_at=now)
    if not store.insert_if_absent(PROMOTIONS, msg.promotion_id, msgspec.to_builtins(doc)):
        return []
    event = "GUARDS_PASSED" if ok and not reasons else "GUARDS_FAILED"
    return _step(ctx, doc, event, reasons=reasons, metrics=figures, by=msg.requested_by)


def on_timer(env: Envelope, ctx) -> list:
    t: TimerFired = env.payload
    if t.name != TIMER:
        raise PermanentError(f"s10 has no timer named {t.name!r}")
    doc = _load(ctx.store, t.ref)
    if doc is None or doc.state != t.data.get("state") or doc.state not in rollout.STAGES:
        return []  # stale: the rollout moved on (resumed, aborted) since this timer was armed
    gov = _governance(ctx.store, doc)
    now = ctx.now_ms()
    if doc.state == "SHADOW":
        metrics = _shadow(ctx.store, doc, now)
        verdict, reasons = rollout.analyze_shadow(gov, metrics)
    else:
        metrics = stage_metrics(ctx.store, bundle_id=doc.bundle_id, rev=doc.stage_rev, since_ms=doc.stage_started_ms,
                                until_ms=now + 1, incumbent=(doc.previous_bundle_id, doc.previous_rev),
                                equity_usdt=gov.equity_usdt)
        verdict, reasons = rollout.analyze_live(gov, metrics)
    if verdict == rollout.INCONCLUSIVE and doc.extensions < gov.max_extensions \
            and rollout.short_of_samples(gov, doc.state, metrics):
        return _extend(ctx, doc, gov, reasons, jsonable(metrics))
    return _step(ctx, doc, verdict, verdict=verdict, reasons=reasons, metrics=jsonable(metrics))


def _extend(ctx, doc: PromotionDoc, gov: rollout.Governance, reasons: list[str], metrics: dict) -> list:
    """Too few samples for a verdict: the stage runs one more interval (recorded as a step, state kept)."""
    now = ctx.now_ms()
    active = service.active(ctx.store) or {"bundle_id": "", "rev": 0}
    step = PromotionStep(at_ms=now, from_state=doc.state, event="EXTENDED", to_state=doc.state,
                         active=service.key(active["bundle_id"], active["rev"]), verdict=rollout.INCONCLUSIVE,
                         metrics=metrics,
                         reasons=[*reasons, f"extension {doc.extensions + 1} of {gov.max_extensions}"])
    patch = {"extensions": doc.extensions + 1, "updated_at": now,
             "steps": [*msgspec.to_builtins(doc.steps), msgspec.to_builtins(step)]}
    if not ctx.store.update_if(PROMOTIONS, doc.promotion_id, patch, {"state": doc.state,
                                                                     "updated_at": doc.updated_at}):
        return []  # another delivery extended or moved it first
    return [_analysis_timer(doc.promotion_id, doc.state, now + gov.analysis_interval_ms)]


def _analysis_timer(pid: str, state: str, due: int) -> Emit:
    """The stage's next analysis (one armed per promotion: a new one replaces it)."""
    return Emit(keys.CFG_COMMANDS, TimerFired(name=TIMER, ref=pid, due_ms=due, data={"state": state}),
                f"{timer_key(pid)}:{state}:{due}", due_ms=due, timer_key=timer_key(pid))


def on_command(env: Envelope, ctx) -> list:
    c: PromotionCommand = env.payload
    doc = _load(ctx.store, c.promotion_id)
    if doc is None:
        raise PermanentError(f"promotion {c.promotion_id} does not exist")
    if rollout.next_state(doc.state, c.action, doc.paused_state) is None:
        raise PermanentError(f"promotion {c.promotion_id} is {doc.state}: {c.action} is not allowed there")
    return _step(ctx, doc, c.action, by=c.by)


def _governance(store, doc: PromotionDoc) -> rollout.Governance:
    prev = service.get_bundle(store, doc.previous_bundle_id, doc.previous_rev) or {}
    return rollout.Governance.from_bundle(prev.get("body") or {})


def _shadow(store, doc: PromotionDoc, now: int) -> dict:
    """The candidate decides the signals seen since SHADOW began; the live decisions are the active's."""
    sigs = [s for s in dryrun.stored_signals(store, now_ms=now + 1, days=(now + 1 - doc.stage_started_ms) / dryrun.DAY_MS)
            if s.t0 >= doc.stage_started_ms]
    cand_body = (service.get_bundle(store, doc.bundle_id, doc.rev) or {}).get("body") or {}
    cand = dryrun.decide_all(cand_body, sigs, bundle_id=doc.bundle_id, rev=doc.rev)
    live = {}
    for s in sigs:
        live[s.signal_id] = (store.get(SIGNALS, s.signal_id) or {}).get("decision") or {"action": "skip"}
        store.upsert(SHADOW_DECISIONS, f"{doc.promotion_id}:{s.signal_id}", {
            "promotion_id": doc.promotion_id, "signal_id": s.signal_id, "t0": s.t0, "symbol": s.symbol,
            "candidate": cand[s.signal_id], "active": live[s.signal_id], "executed": False})
    d = dryrun.diff(live, cand, active_ref=service.key(doc.previous_bundle_id, doc.previous_rev))
    return msgspec.to_builtins(d)


def _step(ctx, doc: PromotionDoc, event: str, *, verdict: str = "", reasons=(), metrics=None, by: str = "") -> list:
    store, now = ctx.store, ctx.now_ms()
    to = rollout.next_state(doc.state, event, doc.paused_state)
    if to is None:
        raise PermanentError(f"promotion {doc.promotion_id}: no transition from {doc.state} on {event}")
    gov = _governance(store, doc)
    out: list = []
    patch: dict = {"state": to, "updated_at": now}
    active = service.active(store) or {"bundle_id": "", "rev": 0}
    if to in rollout.STAGES:
        patch.update(stage_started_ms=now, paused_state="", extensions=0)
        if to == "SHADOW":
            patch["stage_rev"] = 0
        else:
            bid, rev = doc.bundle_id, doc.rev
            if to != "RAMP_100":  # 100% of size is the candidate itself
                cand = (service.get_bundle(store, doc.bundle_id, doc.rev) or {}).get("body") or {}
                rev = service.next_rev(store, doc.bundle_id)
                body = rollout.stage_body(cand, to, gov, doc.promotion_id)
                store.insert_if_absent(CONFIG_BUNDLES, service.key(bid, rev), msgspec.to_builtins(BundleDoc(
                    bundle_id=bid, rev=rev, body=body, status="STAGE", sha256=service.sha256(body), created_at=now,
                    created_by="s10", source=f"rollout:{doc.promotion_id}:{to}")))
            patch["stage_rev"] = rev
            out += _activate(store, doc, bid, rev, to)
            active = {"bundle_id": bid, "rev": rev}
        out.append(_analysis_timer(doc.promotion_id, to, now + gov.analysis_interval_ms))
    else:
        out.append(CancelTimer(timer_key(doc.promotion_id)))
        if to == "PAUSED":
            patch["paused_state"] = doc.state
        elif to == "ROLLED_BACK":
            out += _activate(store, doc, doc.previous_bundle_id, doc.previous_rev, to)
            active = {"bundle_id": doc.previous_bundle_id, "rev": doc.previous_rev}
            _status(store, doc.bundle_id, doc.rev, "REJECTED")
        elif to == "PROMOTED":
            _status(store, doc.bundle_id, doc.rev, "ACTIVE")
            _status(store, doc.previous_bundle_id, doc.previous_rev, "RETIRED")
    step = PromotionStep(at_ms=now, from_state=doc.state, event=event, to_state=to,
                         active=service.key(active["bundle_id"], active["rev"]), verdict=verdict,
                         metrics=dict(metrics or {}), reasons=list(reasons), by=by)
    patch["steps"] = [*msgspec.to_builtins(doc.steps), msgspec.to_builtins(step)]
    if not store.update_if(PROMOTIONS, doc.promotion_id, patch, {"state": doc.state}):
        return []  # another delivery moved it first; its effects are the ones that count
    return out


def _activate(store, doc: PromotionDoc, bundle_id: str, rev: int, stage: str) -> list[Emit]:
    service.switch_active(store, bundle_id, rev)
    return [Emit(keys.CFG_EVENTS, ConfigActivated(bundle_id=bundle_id, rev=rev),
                 f"cfg:{doc.promotion_id}:{stage}:{bundle_id}:{rev}")]


def _status(store, bundle_id: str, rev: int, status: str) -> None:
    if store.get(CONFIG_BUNDLES, service.key(bundle_id, rev)) is not None:
        store.update_if(CONFIG_BUNDLES, service.key(bundle_id, rev), {"status": status}, {})
