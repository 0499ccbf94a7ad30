"""The consumer-group runtime against real Redis (standalone and the 6-node cluster)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from redis.exceptions import ResponseError

from chimera.ops.streams_admin import dlq_entries, dlq_requeue
from chimera.schemas.envelope import decode
from chimera.schemas.messages import ConfigActivated, Noop
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.streams.replay import print_range, rewind_group
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.runtime import ensure_group
from tests.conftest import subprocess_env
from tests.support import handlers
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker, spawn


def test_sigkill_mid_handle_is_redelivered_and_effect_happens_once(r, settings):
    producer = Producer(r, WallClock())
    for i in range(20):
        producer.publish("t:in", Noop(n=i, data="slow" if i == 7 else ""), idempotency_key=f"k{i}")
    a = spawn("tests.support.handlers:EFFECT_SPEC", "victim", settings)
    try:
        wait_until(lambda: r.get("t:inflight:k7") == b"victim", timeout=20, message="victim handling k7")
        a.send_signal(signal.SIGKILL)
        a.wait(5)
        b = spawn("tests.support.handlers:EFFECT_SPEC", "survivor", settings)
        try:
            store = open_store(settings.store_url)
            wait_until(lambda: store.count("effects") == 20, timeout=30, message="all 20 effects")
            doc = store.get("effects", "k7")
            assert doc["by"] == "survivor"  # the killed worker never finished k7
            wait_until(lambda: not r.xpending("t:in", keys.group("t-effect"))["pending"], timeout=10,
                       message="nothing pending")
            log = [x.decode() for x in r.lrange("t:effects", 0, -1)]
            assert sorted(log) == sorted(f"k{i}" for i in range(20))  # each effect exactly once
        finally:
            b.send_signal(signal.SIGTERM)
            assert b.wait(10) == 0  # SIGTERM: finishes the entry in hand, exits cleanly
    finally:
        if a.poll() is None:
            a.kill()


def test_poison_entries_are_dead_lettered_and_the_worker_keeps_going(r, settings):
    producer = Producer(r, WallClock())
    producer.publish("t:in", Noop(n=1), idempotency_key="good-1")
    r.xadd("t:in", {"t": b"noop", "e": b"\x00not msgpack"})
    producer.publish("t:in", Noop(n=2, data="boom"), idempotency_key="bad-2")
    producer.publish("t:in", Noop(n=3), idempotency_key="good-3")
    with ThreadWorker(handlers.EFFECT_SPEC, r, settings, "w1") as w:
        wait_until(lambda: len(dlq_entries(r)) == 2, timeout=20, message="two dead letters")
        wait_until(lambda: w.store.count("effects") == 2, timeout=5, message="both good entries handled")
    letters = {letter.reason.split(":")[0]: letter for _, letter in dlq_entries(r)}
    assert "undecodable" in letters
    boom = next(letter for reason, letter in letters.items() if reason != "undecodable")
    assert "boom on 2" in boom.reason and boom.attempts == settings.max_attempts
    assert boom.stream == "t:in" and boom.group == keys.group("t-effect")
    assert decode(boom.fields).idempotency_key == "bad-2"  # the original entry travels with it
    assert r.xpending("t:in", keys.group("t-effect"))["pending"] == 0


def test_dlq_requeue_puts_the_entry_back(r, settings):
    r.xadd("t:in", {"t": b"noop", "e": b"garbage"})
    with ThreadWorker(handlers.EFFECT_SPEC, r, settings, "w1"):
        wait_until(lambda: len(dlq_entries(r)) == 1, timeout=10, message="dead letter")
    entry_id, letter = dlq_entries(r)[0]
    new_id = dlq_requeue(r, entry_id)
    assert r.xrange("t:in", min=new_id, max=new_id)[0][1][b"e"] == b"garbage"
    assert dlq_entries(r) == []


def test_replay_from_an_id_delivers_exactly_the_entries_after_it(r, settings):
    producer = Producer(r, WallClock())
    ids = [producer.publish("t:rec", Noop(n=i), idempotency_key=f"r{i}") for i in range(10)]
    with ThreadWorker(handlers.RECORD_SPEC, r, settings, "w1"):
        wait_until(lambda: r.llen("t:handled") == 10, timeout=10, message="first pass")
        # Handled is not yet committed: the done-markers and acks follow the batch (on a cluster after the
        # replica wait). A rewind before them is undone by them: the replay is skipped as done (CI run 22).
        wait_until(lambda: not r.xpending("t:rec", keys.group("t-record"))["pending"], timeout=10,
                   message="first pass committed")
        r.delete("t:handled")
        n = rewind_group(r, "t:rec", keys.group("t-record"), ids[4])
        assert n == 5
        wait_until(lambda: r.llen("t:handled") == 5, timeout=10, message="replayed entries")
        time.sleep(0.2)  # nothing more may arrive: the rewind delivered exactly 5
        assert [x.decode() for x in r.lrange("t:handled", 0, -1)] == ids[5:]
    printed = [json.loads(line) for line in print_range(r, "t:rec", ids[1], ids[3])]
    assert [row["idempotency_key"] for row in printed] == ["r2", "r3"]


def test_expired_lock_of_a_stopped_holder_refuses_its_late_write(r, settings):
    from chimera.workers.locks import Lock

    env = subprocess_env(settings)
    holder = subprocess.Popen([sys.executable, "-m", "tests.support.lock_holder", "pos-p1", "500"], env=env)
    try:
        fence1 = int(wait_until(lambda: r.get("t:holder:fence"), timeout=20, message="holder's fence"))
        holder.send_signal(signal.SIGSTOP)  # a GC pause / network partition, as far as the lock knows
        mine = Lock(r, "pos-p1", 5000, owner="newcomer")
        assert mine.acquire(wait_ms=3000), "lock did not expire"
        assert mine.fence > fence1
        store = open_store(settings.store_url)
        assert store.put_fenced("positions", "p1", {"writer": "newcomer"}, mine.fence)
        holder.send_signal(signal.SIGCONT)
        r.set("t:holder:go", 1)
        assert wait_until(lambda: r.get("t:holder:result"), timeout=10, message="late write") == b"refused"
        assert store.get("positions", "p1")["writer"] == "newcomer"
    finally:
        holder.kill()


def test_lock_of_a_killed_worker_expires(r, settings):
    from chimera.workers.locks import Lock

    holder = subprocess.Popen([sys.executable, "-m", "tests.support.lock_holder", "treasury-x", "400"],
                              env=subprocess_env(settings))
    fence1 = int(wait_until(lambda: r.get("t:holder:fence"), timeout=20, message="holder's fence"))
    holder.kill()
    holder.wait()
    mine = Lock(r, "treasury-x", 1000)
    assert not mine.acquire(wait_ms=0)  # still held: the TTL has not run out
    assert mine.acquire(wait_ms=2000)
    assert mine.fence == fence1 + 1
    assert mine.release() and Lock(r, "treasury-x", 1000).acquire()


def test_two_replicas_of_an_ordered_role_keep_each_stream_in_order(r, settings):
    producer = Producer(r, WallClock())
    per_stream = 150
    store = open_store(settings.store_url)
    w1 = ThreadWorker(handlers.ORDERED_SPEC, r, settings, "o1", store)
    w2 = ThreadWorker(handlers.ORDERED_SPEC, r, settings, "o2", store)
    with w1, w2:
        # The first replica up takes every stream; the fair share hands half to the second.
        wait_until(lambda: w1.worker.leases.owned and w2.worker.leases.owned
                   and len(w1.worker.leases.owned) + len(w2.worker.leases.owned) == 4,
                   timeout=10, message="leases rebalanced over both replicas")
        for i in range(per_stream):
            for s in handlers.ORDERED_STREAMS:
                producer.publish(s, Noop(n=i), idempotency_key=f"{s}:{i}")
        wait_until(lambda: all(r.llen(f"t:seq:{s}") >= per_stream for s in handlers.ORDERED_STREAMS),
                   timeout=60, message="every stream fully handled")
        owners = (set(w1.worker.leases.owned), set(w2.worker.leases.owned))
    for s in handlers.ORDERED_STREAMS:
        seen = [int(x) for x in r.lrange(f"t:seq:{s}", 0, -1)]
        assert seen == list(range(per_stream)), f"{s} out of order or duplicated"
    assert all(owners), f"both replicas should own streams, got {owners}"


def test_ordered_stream_taken_over_after_owner_is_killed(r, settings):
    producer = Producer(r, WallClock())
    s = handlers.ORDERED_STREAMS
    group = keys.group("t-ordered")
    a = spawn("tests.support.handlers:ORDERED_SPEC", "oa", settings)
    try:
        for i in range(40):
            for stream in s:
                producer.publish(stream, Noop(n=i), idempotency_key=f"{stream}:{i}")
        # Killed between batches: a kill after a handler's effect but before its batch's ack replays
        # that batch by design (at-least-once), which this non-idempotent recorder would count twice.
        # Pending entries of a dead owner are covered by the next test.
        wait_until(lambda: all(r.llen(f"t:seq:{x}") >= 40 and not r.xpending(x, group)["pending"] for x in s),
                   timeout=30, message="first batch handled and acked")
        a.kill()
        a.wait()
        for i in range(40, 80):
            for stream in s:
                producer.publish(stream, Noop(n=i), idempotency_key=f"{stream}:{i}")
        with ThreadWorker(handlers.ORDERED_SPEC, r, settings, "ob"):
            wait_until(lambda: all(r.llen(f"t:seq:{x}") >= 80 for x in s), timeout=30, message="takeover")
        for stream in s:
            seen = [int(x) for x in r.lrange(f"t:seq:{stream}", 0, -1)]
            assert seen == list(range(80)), f"{stream}: {seen}"
    finally:
        if a.poll() is None:
            a.kill()


def test_takeover_handles_the_dead_owners_pending_entries_first_and_in_order(r, settings):
    """A dead owner read entries 0..9 and died before handling them; they sit in its PEL while 10..19
    arrive. The next owner must handle 0..19 in order: the claim comes before any new read."""
    producer = Producer(r, WallClock())
    group = keys.group("t-ordered")
    for stream in handlers.ORDERED_STREAMS:
        ensure_group(r, stream, group)
        for i in range(10):
            producer.publish(stream, Noop(n=i), idempotency_key=f"{stream}:{i}")
        # One stream per call: the streams live in different cluster slots.
        [(_, entries)] = r.xreadgroup(group, "dead", {stream: ">"}, count=10)
        assert len(entries) == 10
        r.set(keys.lease_key("t-ordered", stream), "dead", px=400)  # expires: the owner stopped renewing
        for i in range(10, 20):
            producer.publish(stream, Noop(n=i), idempotency_key=f"{stream}:{i}")
    with ThreadWorker(handlers.ORDERED_SPEC, r, settings, "heir"):
        wait_until(lambda: all(r.llen(f"t:seq:{x}") >= 20 and not r.xpending(x, group)["pending"]
                               for x in handlers.ORDERED_STREAMS), timeout=30, message="takeover")
    for stream in handlers.ORDERED_STREAMS:
        assert [int(x) for x in r.lrange(f"t:seq:{stream}", 0, -1)] == list(range(20)), stream


def test_config_hot_reload_swaps_rev_between_entries(r, settings):
    store = open_store(settings.store_url)
    activate(store, "b1", 1, {"x": 1})
    producer = Producer(r, WallClock())
    with ThreadWorker(handlers.ENRICH_SPEC, r, settings, "c1", store) as w:
        producer.publish("t:raw", Noop(n=1), idempotency_key="a")
        wait_until(lambda: store.get("t_enriched", "a"), timeout=10, message="first doc")
        assert store.get("t_enriched", "a")["rev"] == 1
        activate(store, "b1", 2, {"x": 2})
        producer.publish(keys.CFG_EVENTS, ConfigActivated(bundle_id="b1", rev=2), idempotency_key="cfg2")
        wait_until(lambda: w.config.current.rev == 2, timeout=10, message="rev 2 active")
        producer.publish("t:raw", Noop(n=2), idempotency_key="b")
        wait_until(lambda: store.get("t_enriched", "b"), timeout=10, message="second doc")
    assert store.get("t_enriched", "b")["rev"] == 2
    assert w.config.current.get("x") == 2


def test_an_activation_announced_before_the_watcher_reads_is_not_missed(r, settings):
    """The holder loads config_active when the worker is built; the watcher thread starts later. An
    activation announced in between used to be skipped (the thread began at ``$``): the worker ran the
    old rev until the next announcement. Later announcements are still followed."""
    from chimera.workers.config import ConfigHolder

    store = open_store(settings.store_url)
    producer = Producer(r, WallClock())
    activate(store, "b1", 1, {"x": 1})
    producer.publish(keys.CFG_EVENTS, ConfigActivated(bundle_id="b1", rev=1), idempotency_key="w1")
    holder = ConfigHolder(store)
    assert holder.current.rev == 1
    activate(store, "b1", 2, {"x": 2})  # S10 writes config_active, then announces it
    producer.publish(keys.CFG_EVENTS, ConfigActivated(bundle_id="b1", rev=2), idempotency_key="w2")
    holder.watch(r)
    try:
        wait_until(lambda: holder.current.rev == 2, timeout=5, message="rev 2 announced before the watch")
        activate(store, "b1", 3, {"x": 3})
        producer.publish(keys.CFG_EVENTS, ConfigActivated(bundle_id="b1", rev=3), idempotency_key="w3")
        wait_until(lambda: holder.current.rev == 3, timeout=5, message="rev 3 announced during the watch")
    finally:
        holder.stop()
    assert holder.current.get("x") == 3


def test_exactly_one_scheduler_is_active_and_fires_each_entry_once(r, settings):
    from chimera.schemas.envelope import Envelope
    from chimera.workers import scheduler
    from chimera.workers.scheduler_role import run_scheduler

    now = int(time.time() * 1000)
    for i in range(30):
        env = Envelope(type="noop", idempotency_key=f"tm{i}", payload=Noop(n=i))
        scheduler.schedule(r, f"tm{i}", now + 100 + i * 5, "t:fired", env)
    scheduler.schedule(r, "later", now + 600_000, "t:fired", Envelope(type="noop", idempotency_key="l", payload=Noop()))
    assert scheduler.cancel(r, "later")
    stop = threading.Event()
    threads = [threading.Thread(target=run_scheduler, args=(r, WallClock(), f"s{i}", stop, 2000), daemon=True)
               for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: r.xlen("t:fired") >= 30, timeout=10, message="30 timers fired")
        time.sleep(0.3)  # grace window: a timer fired twice (two active schedulers) would show up here
        fired = [decode(f).idempotency_key for _, f in r.xrange("t:fired")]
        assert sorted(fired) == sorted(f"tm{i}" for i in range(30))
        assert scheduler.pending(r) == 0
        assert r.get(keys.SCHED_LEASE) in (b"s0", b"s1")
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_sigterm_finishes_the_entry_in_hand(r, settings):
    producer = Producer(r, WallClock())
    producer.publish("t:in", Noop(n=0, data="slow"), idempotency_key="s0")
    w = spawn("tests.support.handlers:EFFECT_SPEC", "term", settings)
    try:
        wait_until(lambda: r.get("t:inflight:s0") == b"term", timeout=20, message="handling s0")
        w.send_signal(signal.SIGTERM)
        assert w.wait(10) == 0
        assert open_store(settings.store_url).get("effects", "s0")["by"] == "term"
        assert r.xpending("t:in", keys.group("t-effect"))["pending"] == 0
    finally:
        if w.poll() is None:
            w.kill()


def _times_delivered(r, stream: str, group: str) -> int:
    """Deliveries of the stream's first pending entry; 0 while the worker has not created its group yet
    (CI run 41: the first poll beat the worker thread's group creation and raised NOGROUP)."""
    try:
        pending = r.xpending_range(stream, group, "-", "+", 1)
    except ResponseError as exc:
        if "NOGROUP" in str(exc):
            return 0
        raise
    return pending[0]["times_delivered"] if pending else 0


def test_a_busy_lock_is_not_a_failed_attempt(r, settings):
    from chimera.workers.locks import Lock

    held = Lock(r, "t-res", 10_000, owner="someone-else")
    assert held.acquire()
    Producer(r, WallClock()).publish("t:lk", Noop(n=1), idempotency_key="lk1")
    with ThreadWorker(handlers.LOCKED_SPEC, r, settings, "l1"):
        # Several claim cycles (more than max_attempts deliveries) pass while the lock is busy.
        wait_until(lambda: _times_delivered(r, "t:lk", keys.group("t-locked")) > settings.max_attempts,
                   timeout=20, message="redelivered past max_attempts")
        assert r.llen("t:locked") == 0 and dlq_entries(r) == []
        held.release()
        wait_until(lambda: r.llen("t:locked") == 1, timeout=10, message="handled once the lock is free")
    assert dlq_entries(r) == []


def test_a_commit_each_role_publishes_an_entrys_result_before_the_rest_of_its_batch(r, settings):
    """S4's results must not wait behind a read batch of venue round trips (S5 would take a filled leg whose
    result is not out for an orphan): with ``commit_each`` an entry's emits and ack go out when it is done."""
    from chimera.handlers.router.role import SPEC as S4

    assert S4.commit_each
    p = Producer(r, WallClock())
    p.publish(handlers.GATED_IN, Noop(n=1), idempotency_key="g-1")
    p.publish(handlers.GATED_IN, Noop(n=2, data="wait"), idempotency_key="g-2")  # the same read batch
    pending = lambda: r.xpending(handlers.GATED_IN, keys.group("t-gated"))["pending"]  # noqa: E731
    try:
        with ThreadWorker(handlers.GATED_SPEC, r, settings, "t-gated-a"):
            # The first result out and its entry acked (on a cluster the ack follows the emit's write)
            # while the second entry still waits.
            wait_until(lambda: r.exists(handlers.GATED_OUT) and r.xlen(handlers.GATED_OUT) == 1 and pending() == 1,
                       timeout=10, message="the first entry's result out and acked while the second waits")
            assert [decode(f).payload.n for _, f in r.xrange(handlers.GATED_OUT)] == [1]
            r.set(handlers.GATE, b"1")
            wait_until(lambda: r.xlen(handlers.GATED_OUT) == 2 and not pending(), timeout=10,
                       message="the second done once the gate opens")
    finally:
        r.set(handlers.GATE, b"1")  # a failed check must not leave the worker waiting at the gate


def _xreadgroup_calls(r) -> int:
    if hasattr(r, "get_primaries"):
        return sum(r.get_redis_connection(n).info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0)
                   for n in r.get_primaries())
    return r.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0)


@pytest.mark.parametrize("spec,streams", [(handlers.SLOTS_SPEC, handlers.SLOTS_STREAMS),
                                          (handlers.ORDERED_SPEC, handlers.ORDERED_STREAMS)],
                         ids=["shared", "ordered"])
def test_an_idle_worker_over_several_slots_blocks_instead_of_polling(r, settings, spec, streams):
    """On a cluster each stream here is in its own slot. Polling them cost an idle worker a fifth of a
    core (about 200 reads per second per slot); blocking reads make about one per slot per ``block_ms``
    (50 ms here: 20 a second). Entries arriving in any slot while the worker idles are still handled."""
    producer = Producer(r, WallClock())
    record = "t:sl:handled" if spec is handlers.SLOTS_SPEC else None
    with ThreadWorker(spec, r, settings, "idle") as w:
        if spec.ordered:
            wait_until(lambda: w.leases.owned == set(streams), timeout=10, message="all leases")
        time.sleep(0.3)
        before, t0 = _xreadgroup_calls(r), time.monotonic()
        time.sleep(1.0)
        calls, idle_s = _xreadgroup_calls(r) - before, time.monotonic() - t0
        per_s = 1000 / settings.block_ms
        assert calls <= len(streams) * per_s * idle_s * 1.5 + 10, (calls, idle_s)
        for n, stream in enumerate(streams * 2):
            producer.publish(stream, Noop(n=n), idempotency_key=f"idle:{n}")
            if record:
                wait_until(lambda n=n, stream=stream: f"{stream}:{n}".encode() in r.lrange(record, 0, -1),
                           timeout=5, message=f"{stream} entry {n}")
            else:
                wait_until(lambda n=n, stream=stream: str(n).encode() in r.lrange(f"t:seq:{stream}", 0, -1),
                           timeout=5, message=f"{stream} entry {n}")
            time.sleep(0.08)  # the readers are back in their blocking reads
    group = keys.group(spec.role)
    assert all(not r.xpending(s, group)["pending"] for s in streams)
