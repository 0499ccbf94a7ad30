"""``Notify`` → one delivery, tracked in ``notifications/<event_id>:<channel>``.

State machine (transition table below): PENDING → SENDING → SENT | RETRY_WAIT | DEAD, and
RETRY_WAIT → SENDING. The document is written *before* each send (state SENDING, the attempt
appended to ``log`` without an outcome) and after it (the outcome). So:

* a second ``Notify`` for the same (event, channel), a replay or a redelivery finds SENT or DEAD and
  sends nothing;
* a worker killed mid-send leaves SENDING with an attempt that has no outcome: whoever handles the
  entry next marks that attempt ``lost`` (its reply was lost: the receiver may or may not have it)
  and sends again. That is the only way a receiver sees a message twice, and the log says so.
  Webhook receivers de-duplicate by ``webhook-id``; Telegram has no idempotency key, so a lost reply
  there can show a message twice;
* a failure is retried after ``base_ms * 2^(attempt-1)`` (capped at ``max_ms``, deterministic jitter
  of up to -50% so a burst spreads) or the receiver's ``retry_after`` (429), whichever is longer, as
  a timer on the outbox (one timer key per notification);
* after ``max_attempts`` sends, or at once on a 4xx no retry can fix (or a channel that is not
  configured), the document is DEAD with the reason and the entry is dead-lettered with it.
"""

from __future__ import annotations

import hashlib

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.notifier.channels import Channel, Retry, parse_channel, send
from chimera.schemas.envelope import Envelope
from chimera.schemas.observability import Notify
from chimera.store.collections import NOTIFICATIONS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

PENDING, SENDING, SENT, RETRY_WAIT, DEAD = "PENDING", "SENDING", "SENT", "RETRY_WAIT", "DEAD"
TRANSITIONS = {
    PENDING: {SENDING, DEAD},
    SENDING: {SENT, RETRY_WAIT, DEAD, SENDING},  # SENDING -> SENDING: the previous send's reply was lost
    RETRY_WAIT: {SENDING, DEAD},
    SENT: set(),
    DEAD: set(),
}


def key_of(n: Notify) -> str:
    return f"{n.event_id}:{n.channel}"


def lock_scope(env: Envelope) -> str:
    return f"notify:{key_of(env.payload)}"


def config(ctx: Context) -> tuple[dict, Retry]:
    cfg = (ctx.config.get("notifier") if ctx.config is not None else None) or {}
    r = cfg.get("retry") or {}
    try:
        retry = Retry(int(r.get("max_attempts", Retry.max_attempts)), int(r.get("base_ms", Retry.base_ms)),
                      int(r.get("max_ms", Retry.max_ms)), float(r.get("timeout_s", Retry.timeout_s)))
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"bundle notifier.retry: {exc}") from None
    return dict(cfg.get("channels") or {}), retry


def backoff_ms(key: str, attempt: int, retry: Retry) -> int:
    full = min(retry.max_ms, retry.base_ms * 2 ** (attempt - 1))
    frac = int.from_bytes(hashlib.sha256(f"{key}:{attempt}".encode()).digest()[:2], "big") / 65535
    return int(full * (1 - 0.5 * frac))


def _move(ctx: Context, key: str, doc: dict, target: str, patch: dict) -> dict:
    if target not in TRANSITIONS[doc["state"]]:
        raise PermanentError(f"notification {key}: {doc['state']} -> {target} is not a transition")
    # Compare-and-set on (state, attempts): under the route's lock this only fails if a lock expired
    # mid-send and another replica moved on; then the entry is retried and re-reads the document.
    if not ctx.store.update_if(NOTIFICATIONS, key, {"state": target, **patch},
                               {"state": doc["state"], "attempts": doc["attempts"]}):
        raise RetryableError(f"notification {key} changed under us; retrying")
    return ctx.store.get(NOTIFICATIONS, key)


def _timer(env: Envelope, key: str, due_ms: int, attempt: int) -> Emit:
    return Emit(keys.NOTIFY_OUTBOX, env.payload, f"{key}:retry:{attempt}", env.account_id,
                due_ms=due_ms, timer_key=f"notify:{key}")


def _dead(ctx: Context, key: str, doc: dict, reason: str, log: list | None = None) -> None:
    patch = {"dead_reason": reason, "dead_at": ctx.now_ms()}
    if log is not None:
        patch["log"] = log
    _move(ctx, key, doc, DEAD, patch)
    raise PermanentError(f"notification {key} dead: {reason}")


def on_notify(env: Envelope, ctx: Context) -> list[Emit]:
    n: Notify = env.payload
    key = key_of(n)
    channels, retry = config(ctx)
    now = ctx.now_ms()
    ctx.store.insert_if_absent(NOTIFICATIONS, key, {
        "event_id": n.event_id, "channel": n.channel, "level": n.level, "text": n.text, "data": dict(n.data),
        "state": PENDING, "attempts": 0, "log": [], "created_at": now, "next_at": now, "sent_at": None})
    doc = ctx.store.get(NOTIFICATIONS, key)
    if doc["state"] in (SENT, DEAD):
        return []
    if doc["state"] == RETRY_WAIT and now < doc["next_at"]:
        return [_timer(env, key, doc["next_at"], doc["attempts"])]  # early duplicate: keep the one timer
    if n.channel not in channels:
        _dead(ctx, key, doc, f"channel {n.channel!r} is not configured (bundle notifier.channels)")
    ch: Channel = parse_channel(n.channel, channels[n.channel])
    log = [dict(x) for x in doc["log"]]
    if doc["state"] == SENDING and log and log[-1].get("outcome") is None:
        log[-1].update(outcome="lost", detail="the worker stopped before the reply was recorded")
    if doc["attempts"] >= retry.max_attempts:
        _dead(ctx, key, doc, f"{doc['attempts']} attempts, last: {log[-1]['detail'] if log else '-'}", log)
    attempt = doc["attempts"] + 1
    log.append({"attempt": attempt, "started_at": now, "outcome": None})
    doc = _move(ctx, key, doc, SENDING, {"attempts": attempt, "log": log})
    body = {"type": "chimera.notification", "timestamp": doc["created_at"],
            "data": {"event_id": n.event_id, "channel": n.channel, "level": n.level, "text": n.text, **n.data}}
    out = send(ch, msg_id=key, attempt=attempt, now_s=now // 1000, body=body, text=n.text, timeout_s=retry.timeout_s)
    done = ctx.now_ms()
    log[-1].update(outcome="ok" if out.ok else "failed", detail=out.detail, ended_at=done)
    if out.ok:
        _move(ctx, key, doc, SENT, {"log": log, "sent_at": done})
        return []
    if out.permanent:
        _dead(ctx, key, doc, out.detail, log)
    if attempt >= retry.max_attempts:
        _dead(ctx, key, doc, f"{attempt} attempts, last: {out.detail}", log)
    wait = backoff_ms(key, attempt, retry)
    if out.retry_after_s is not None:
        wait = max(wait, int(out.retry_after_s * 1000))
        log[-1]["retry_after_s"] = out.retry_after_s
    due = done + wait
    _move(ctx, key, doc, RETRY_WAIT, {"log": log, "next_at": due})
    return [_timer(env, key, due, attempt)]
