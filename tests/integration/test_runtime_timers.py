"""Timers a handler returns, and route tables, on both runtimes.

Redis: the worker writes the due-queue in its flush pipeline (single node and the cluster); the
scheduler's ``fire_due`` turns due entries into stream messages. In-process: a heap on the
ManualClock, no Redis at all.
"""

from __future__ import annotations

import pytest

from chimera.ops.streams_admin import dlq_entries
from chimera.schemas.envelope import decode
from chimera.schemas.messages import ConfigActivated, Noop
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.streams.replay import rewind_group
from chimera.workers import scheduler
from chimera.workers.clock import ManualClock
from chimera.workers.inprocess import InProcessRuntime
from tests.support import handlers
from tests.support.polling import group_caught_up, wait_until
from tests.support.workers import ThreadWorker

T0 = 1_751_760_000_000

# (idempotency key, event time, command): A fires at T0+1000; B is armed for T0+1000, then re-armed
# for T0+5010 (replaced: fires once, at the new time); C is armed, then cancelled (never fires).
COMMANDS = [
    ("a", T0, "arm:A:1000"),
    ("b1", T0, "arm:B:1000"),
    ("b2", T0 + 10, "arm:B:5000"),
    ("c1", T0 + 20, "arm:C:2000"),
    ("c2", T0 + 30, "cancel:C"),
]


def _fired(r):
    return [(decode(f).payload.data, decode(f).idempotency_key, decode(f).event_time) for _, f in r.xrange(handlers.TIMER_OUT)]


def test_redis_timers_fire_at_due_time_replace_and_cancel(r, settings):
    store = open_store(settings.store_url)
    producer = Producer(r, ManualClock(T0))
    for i, (key, t, cmd) in enumerate(COMMANDS):
        producer.publish(handlers.TIMER_IN, Noop(n=i, data=cmd), idempotency_key=key, event_time=t)
    group = keys.group("t-timer")
    with ThreadWorker(handlers.TIMER_SPEC, r, settings, "tm1", store):
        wait_until(lambda: r.exists(handlers.TIMER_IN) and group_caught_up(r, handlers.TIMER_IN, group),
                   timeout=20, message="commands handled and acked")
    # Written into the due-queue by the worker, nothing published yet.
    assert scheduler.armed(r, "A") == T0 + 1000
    assert scheduler.armed(r, "B") == T0 + 10 + 5000
    assert scheduler.armed(r, "C") is None
    assert not r.exists(handlers.TIMER_OUT)

    assert scheduler.fire_due(r, T0 + 999) == 0
    assert scheduler.fire_due(r, T0 + 1000) == 1
    assert _fired(r) == [("A", "a:fire", T0 + 1000)]
    assert scheduler.fire_due(r, T0 + 5009) == 0
    assert scheduler.fire_due(r, T0 + 5010) == 1  # B once, at its new due time, with the new payload
    assert scheduler.fire_due(r, T0 + 10**9) == 0  # C never
    assert _fired(r)[1] == ("B", "b2:fire", T0 + 5010)
    fired_a = decode(r.xrange(handlers.TIMER_OUT)[0][1])
    assert fired_a.causation_id == "a" and fired_a.correlation_id == "a"  # the arming entry is the parent

    # Redelivery of every command (done-markers kept): nothing is armed a second time.
    rewind_group(r, handlers.TIMER_IN, group, "0", rehandle=False)
    with ThreadWorker(handlers.TIMER_SPEC, r, settings, "tm2", store):
        wait_until(lambda: group_caught_up(r, handlers.TIMER_IN, group), timeout=20, message="redelivered and acked")
    assert scheduler.pending(r) == 0
    assert scheduler.fire_due(r, T0 + 10**9) == 0


def test_redis_unrouted_type_is_dead_lettered_with_the_reason(r, settings):
    store = open_store(settings.store_url)
    producer = Producer(r, ManualClock(T0))
    # Published before the worker starts, so they arrive in one read batch: n=1 twice (same done-marker).
    producer.publish("t:rt", Noop(n=1), idempotency_key="k1")
    producer.publish("t:rt", ConfigActivated(bundle_id="b", rev=1), idempotency_key="cfg")
    producer.publish("t:rt", Noop(n=1), idempotency_key="k1-again")
    producer.publish("t:rt", Noop(n=2), idempotency_key="k2")
    with ThreadWorker(handlers.ROUTED_SPEC, r, settings, "rt1", store):
        wait_until(lambda: group_caught_up(r, "t:rt", keys.group("t-routed")), timeout=20, message="all acked")
    [(_, letter)] = dlq_entries(r)
    assert "role t-routed has no route for message type config_activated" in letter.reason
    assert decode(letter.fields).idempotency_key == "cfg"
    docs = {d["_key"]: d for d in store.query("t_routed")}
    assert set(docs) == {"k1", "k2"}  # the route's idem (by n) skipped the in-batch duplicate
    assert docs["k2"]["fence"] > docs["k1"]["fence"] > 0  # the route's lock was taken, fenced

    # A replay that re-handles forgets the route's markers (by n here), not the idempotency keys.
    rewind_group(r, "t:rt", keys.group("t-routed"), "0", idem=handlers.ROUTED_SPEC.idempotency)
    with ThreadWorker(handlers.ROUTED_SPEC, r, settings, "rt2", store):
        wait_until(lambda: store.get("t_routed", "k2")["fence"] > docs["k2"]["fence"], timeout=20,
                   message="k2 handled again")


# --- in-process: no Redis ----------------------------------------------------------------------------


def _runtime():
    store = open_store("sqlite://:memory:")
    return InProcessRuntime([handlers.TIMER_SPEC, handlers.FIRED_SPEC], store=store, clock=ManualClock(T0)), store


def test_inprocess_timers_fire_in_event_time_replace_and_cancel():
    rt, store = _runtime()
    for i, (key, t, cmd) in enumerate(COMMANDS):
        rt.publish(handlers.TIMER_IN, Noop(n=i, data=cmd), idempotency_key=key, event_time=t)
    rt.publish(handlers.TIMER_IN, Noop(n=9, data="tick"), idempotency_key="tick", event_time=T0 + 3000)
    rt.run()
    # A fell due before the tick at T0+3000 was delivered: it fired first, at its due time.
    assert store.get("t_fired", "a:fire")["at"] == T0 + 1000
    assert store.get("t_fired", "a:fire")["cause"] == "a"
    assert rt.clock.now_ms() == T0 + 3000
    assert rt.armed_timers() == {"B": T0 + 5010}
    rt.advance_to(T0 + 6000)
    assert store.get("t_fired", "b2:fire")["at"] == T0 + 5010  # once, at the new time
    assert store.get("t_fired", "b1:fire") is None
    assert rt.clock.now_ms() == T0 + 6000
    assert rt.drain_timers() == 0  # C was cancelled
    assert sorted(d["_key"] for d in store.query("t_fired")) == ["a:fire", "b2:fire"]
    assert [e.event_time for e in rt.entries(handlers.TIMER_OUT)] == [T0 + 1000, T0 + 5010]
    # The same command delivered again (at-least-once): the done-marker keeps it from arming again.
    rt.publish(handlers.TIMER_IN, Noop(n=0, data="arm:A:1000"), idempotency_key="a", event_time=T0 + 7000)
    rt.run()
    assert rt.armed_timers() == {}


def test_inprocess_drain_timers_flushes_the_rest_in_due_order():
    rt, store = _runtime()
    rt.publish(handlers.TIMER_IN, Noop(n=1, data="arm:late:9000"), idempotency_key="x", event_time=T0)
    rt.publish(handlers.TIMER_IN, Noop(n=2, data="arm:early:100"), idempotency_key="y", event_time=T0)
    rt.run()
    assert rt.next_timer() == (T0 + 100, "early")
    assert rt.drain_timers() == 2
    assert [e.payload.data for e in rt.entries(handlers.TIMER_OUT)] == ["early", "late"]
    assert rt.clock.now_ms() == T0 + 9000


def test_inprocess_unrouted_type_is_dead_lettered_and_route_lock_idem_honoured():
    store = open_store("sqlite://:memory:")
    rt = InProcessRuntime([handlers.ROUTED_SPEC], store=store, clock=ManualClock(T0))
    rt.publish("t:rt", Noop(n=1), idempotency_key="k1")
    rt.publish("t:rt", ConfigActivated(bundle_id="b", rev=1), idempotency_key="cfg")
    rt.publish("t:rt", Noop(n=1), idempotency_key="k1-again")
    rt.publish("t:rt", Noop(n=2), idempotency_key="k2")
    rt.run()
    [(stream, env, reason)] = rt.dead
    assert stream == "t:rt" and env.idempotency_key == "cfg"
    assert "role t-routed has no route for message type config_activated" in reason
    docs = {d["_key"]: d for d in store.query("t_routed")}
    assert set(docs) == {"k1", "k2"}
    assert (docs["k1"]["fence"], docs["k2"]["fence"]) == (1, 2)


@pytest.mark.parametrize("n", [3])
def test_inprocess_timer_armed_in_the_past_fires_on_run(n):
    rt, store = _runtime()
    rt.publish(handlers.TIMER_IN, Noop(n=n, data="arm:now:0"), idempotency_key="z", event_time=T0)
    rt.run()
    assert store.get("t_fired", "z:fire")["at"] == T0
