"""Small handler specs used by the runtime tests (importable by worker subprocesses)."""

from __future__ import annotations

import os
import signal
import time

from chimera.schemas.messages import Noop
from chimera.streams.producer import Emit
from chimera.workers.handler import HandlerSpec


def _effect(env, ctx):
    p = env.payload
    if p.data == "boom":
        raise ValueError(f"boom on {p.n}")
    if p.data == "slow":
        ctx.redis.set(f"t:inflight:{env.idempotency_key}", ctx.consumer)
        time.sleep(0.6)
    # The effect: a document keyed by the idempotency key; the log entry only when it is new.
    if ctx.store.insert_if_absent("effects", env.idempotency_key, {"n": p.n, "by": ctx.consumer}):
        ctx.redis.rpush("t:effects", env.idempotency_key)
    return [Emit("t:out", Noop(n=p.n), f"{env.idempotency_key}:out")]


EFFECT_SPEC = HandlerSpec(role="t-effect", handle=_effect, streams=lambda s: ["t:in"])


def _record(env, ctx):
    ctx.redis.rpush("t:handled", env.entry_id)
    return ()


RECORD_SPEC = HandlerSpec(role="t-record", handle=_record, streams=lambda s: ["t:rec"])

ORDERED_STREAMS = [f"t:ord:{i}" for i in range(4)]


def _ordered(env, ctx):
    time.sleep(0.0005 * (env.payload.n % 3))  # uneven work so replicas interleave
    ctx.redis.rpush(f"t:seq:{env.stream}", env.payload.n)
    return ()


ORDERED_SPEC = HandlerSpec(role="t-ordered", handle=_ordered, streams=lambda s: list(ORDERED_STREAMS), ordered=True)


# Two hops for the runtime parity test: raw -> enrich -> finish.
def _enrich(env, ctx):
    n = env.payload.n
    ctx.store.upsert("t_enriched", env.idempotency_key, {"n": n, "sq": n * n, "rev": ctx.config.rev,
                                                          "t": ctx.now_ms()})
    return [Emit("t:mid", Noop(n=n * n, data=f"from {n}"), f"{env.idempotency_key}:mid")]


def _finish(env, ctx):
    ctx.store.upsert("t_finished", env.idempotency_key, {"value": env.payload.n, "note": env.payload.data,
                                                          "cause": env.causation_id})
    return [Emit("t:done", Noop(n=env.payload.n + 1), f"{env.idempotency_key}:done")]


ENRICH_SPEC = HandlerSpec(role="t-enrich", handle=_enrich, streams=lambda s: ["t:raw"])
FINISH_SPEC = HandlerSpec(role="t-finish", handle=_finish, streams=lambda s: ["t:mid"])


def _locked(env, ctx):
    ctx.redis.rpush("t:locked", env.idempotency_key)
    return ()


LOCKED_SPEC = HandlerSpec(role="t-locked", handle=_locked, streams=lambda s: ["t:lk"], lock=lambda env: "t-res")


# Crash-loop guard: a handler that takes a while, and one whose "die" entry kills its own worker.
def _paced(env, ctx):
    if env.payload.data == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    if ctx.store.insert_if_absent("effects", env.idempotency_key, {"n": env.payload.n, "by": ctx.consumer}):
        ctx.redis.rpush("t:effects", env.idempotency_key)
    return ()


PACED_SPEC = HandlerSpec(role="t-paced", handle=_paced, streams=lambda s: ["t:paced"])
