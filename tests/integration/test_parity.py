"""The same input through the in-process runtime and the Redis runtime: same emits, same documents."""

from __future__ import annotations

import threading

from chimera.schemas.envelope import to_builtins
from chimera.schemas.messages import Noop
from chimera.store import open_store
from chimera.streams.producer import Producer
from chimera.workers.clock import ManualClock
from chimera.workers.config import activate
from chimera.workers.inprocess import InProcessRuntime
from chimera.workers.runtime import Worker
from tests.support import handlers
from tests.support.polling import wait_until

N = 40
T0 = 1_751_760_000_000


def _comparable(env):
    return (env.type, env.idempotency_key, env.causation_id, env.correlation_id, env.account_id, env.config_rev,
            to_builtins(env.payload))


def _docs(store):
    return ({d["_key"]: {k: v for k, v in d.items() if k != "t"} for d in store.query("t_enriched")},
            {d["_key"]: d for d in store.query("t_finished")})


def test_in_process_and_redis_runtimes_agree(r, settings):
    specs = [handlers.ENRICH_SPEC, handlers.FINISH_SPEC]
    mem_store = open_store("sqlite://:memory:")
    activate(mem_store, "b", 3, {})
    rt = InProcessRuntime(specs, store=mem_store, clock=ManualClock(T0))
    for i in range(N):
        rt.publish("t:raw", Noop(n=i), idempotency_key=f"raw{i}", account_id="sub1", event_time=T0 + i * 60_000)
    rt.run()
    assert not rt.dead

    redis_store = open_store(settings.store_url)
    activate(redis_store, "b", 3, {})
    clock = ManualClock(T0)
    producer = Producer(r, clock)
    workers = [Worker(s, r, settings=settings, store=redis_store, clock=clock, consumer=f"p-{s.role}") for s in specs]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for i in range(N):
            producer.publish("t:raw", Noop(n=i), idempotency_key=f"raw{i}", account_id="sub1", event_time=T0 + i * 60_000)
        wait_until(lambda: r.xlen("t:done") >= N, timeout=30, message="pipeline drained")
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(5)

    from chimera.schemas.envelope import decode

    for stream in ("t:mid", "t:done"):
        redis_entries = sorted((_comparable(decode(f)) for _, f in r.xrange(stream)), key=lambda e: e[1])
        mem_entries = sorted((_comparable(e) for e in rt.entries(stream)), key=lambda e: e[1])
        assert redis_entries == mem_entries, stream
    assert _docs(redis_store) == _docs(mem_store)
    assert len(_docs(mem_store)[1]) == N


def test_in_process_runtime_is_deterministic():
    def run_once():
        store = open_store("sqlite://:memory:")
        rt = InProcessRuntime([handlers.ENRICH_SPEC, handlers.FINISH_SPEC], store=store, clock=ManualClock(T0))
        for i in range(10):
            rt.publish("t:raw", Noop(n=i), idempotency_key=f"raw{i}", event_time=T0 + i)
        rt.run()
        return [(e.entry_id, _comparable(e)) for e in rt.entries("t:done")], _docs(store)

    assert run_once() == run_once()


def test_timers_agree_on_both_runtimes(r, settings):
    """Armed, replaced and cancelled timers: the same messages come out of the Redis due-queue and the
    in-process heap (event time = due time, the arming entry as the cause)."""
    from chimera.streams import keys
    from chimera.workers import scheduler
    from tests.integration.test_runtime_timers import COMMANDS
    from tests.support.polling import group_caught_up
    from tests.support.workers import ThreadWorker

    rt = InProcessRuntime([handlers.TIMER_SPEC], store=open_store("sqlite://:memory:"), clock=ManualClock(T0))
    for i, (key, t, cmd) in enumerate(COMMANDS):
        rt.publish(handlers.TIMER_IN, Noop(n=i, data=cmd), idempotency_key=key, event_time=t)
    rt.run()
    rt.drain_timers()

    producer = Producer(r, ManualClock(T0))
    for i, (key, t, cmd) in enumerate(COMMANDS):
        producer.publish(handlers.TIMER_IN, Noop(n=i, data=cmd), idempotency_key=key, event_time=t)
    with ThreadWorker(handlers.TIMER_SPEC, r, settings, "pt"):
        wait_until(lambda: r.exists(handlers.TIMER_IN) and group_caught_up(r, handlers.TIMER_IN, keys.group("t-timer")),
                   timeout=20, message="commands handled")
    scheduler.fire_due(r, T0 + 10**9)

    from chimera.schemas.envelope import decode

    redis_fired = [(_comparable(decode(f)), decode(f).event_time) for _, f in r.xrange(handlers.TIMER_OUT)]
    mem_fired = [(_comparable(e), e.event_time) for e in rt.entries(handlers.TIMER_OUT)]
    assert redis_fired == mem_fired
    assert [e[0][1] for e in mem_fired] == ["a:fire", "b2:fire"]
