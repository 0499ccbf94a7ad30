"""Small handler specs used by the runtime tests (importable by worker subprocesses)."""

from __future__ import annotations

import os
import signal
import time

from chimera.schemas.messages import Noop
from chimera.streams.producer import CancelTimer, Emit
from chimera.workers.handler import HandlerSpec, Route


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

# Three streams without a common hash tag: three slots on a cluster (one blocking read cannot cover them).
SLOTS_STREAMS = ["t:sl:a", "t:sl:b", "t:sl:c"]


def _slots(env, ctx):
    ctx.redis.rpush("t:sl:handled", f"{env.stream}:{env.payload.n}")
    return ()


SLOTS_SPEC = HandlerSpec(role="t-slots", handle=_slots, streams=lambda s: list(SLOTS_STREAMS))

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


# Timers a handler returns (runtime tests on both runtimes). ``data`` is the command:
# "arm:<name>:<delay_ms>" arms <name> at event_time + delay, "cancel:<name>" disarms it.
TIMER_IN, TIMER_OUT = "t:tm", "t:fired"


def _timers(env, ctx):
    verb, _, rest = env.payload.data.partition(":")
    if verb == "arm":
        name, _, delay = rest.partition(":")
        return [Emit(TIMER_OUT, Noop(n=env.payload.n, data=name), f"{env.idempotency_key}:fire",
                     due_ms=env.event_time + int(delay), timer_key=name)]
    if verb == "cancel":
        return [CancelTimer(rest)]
    return ()


def _fired(env, ctx):
    # When (on the runtime's clock) the fired timer was handled, and what it carried.
    ctx.store.upsert("t_fired", env.idempotency_key, {"name": env.payload.data, "n": env.payload.n,
                                                      "at": ctx.now_ms(), "event_time": env.event_time,
                                                      "cause": env.causation_id, "corr": env.correlation_id})
    return ()


TIMER_SPEC = HandlerSpec(role="t-timer", streams=lambda s: [TIMER_IN], routes={Noop: Route(_timers)})
FIRED_SPEC = HandlerSpec(role="t-fired", streams=lambda s: [TIMER_OUT], routes={Noop: Route(_fired)})


# Route table: Noop is routed (lock scope and a done-marker keyed by n, not by the idempotency
# key); any other type on the stream is not.
def _routed(env, ctx):
    ctx.store.upsert("t_routed", env.idempotency_key, {"n": env.payload.n, "fence": ctx.fence})
    return ()


ROUTED_SPEC = HandlerSpec(role="t-routed", streams=lambda s: ["t:rt"], routes={
    Noop: Route(_routed, lock=lambda env: "t-route", idem=lambda env: f"n{env.payload.n}"),
})


def _logs(env, ctx):
    from loguru import logger

    logger.info("handled {}", env.idempotency_key)
    return [Emit("t:logged", Noop(n=env.payload.n), f"{env.idempotency_key}:next")]


LOG_SPEC = HandlerSpec(role="t-log", streams=lambda s: ["t:log"], routes={Noop: Route(_logs)})


# A batch whose second entry waits for a gate: does the first entry's result go out before it?
GATED_IN, GATED_OUT, GATE = "t:gated", "t:gated:out", "t:gate"


def _gated(env, ctx):
    if env.payload.data == "wait":
        deadline = time.monotonic() + 20
        while not ctx.redis.exists(GATE) and time.monotonic() < deadline:
            time.sleep(0.01)
    return [Emit(GATED_OUT, Noop(n=env.payload.n), f"{env.idempotency_key}:out")]


GATED_SPEC = HandlerSpec(role="t-gated", handle=_gated, streams=lambda s: [GATED_IN], commit_each=True)
