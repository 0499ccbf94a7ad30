"""The crash-loop guard: a handler that kills its worker is dead-lettered; a killed worker's read batch is not.

Workers are real processes (``tests.support.run_worker``) SIGKILLed from the outside or by their own
handler, on standalone Redis and on the cluster.
"""

from __future__ import annotations

import signal

import pytest

from chimera.ops.streams_admin import dlq_entries
from chimera.schemas.messages import Noop
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from tests.support.polling import wait_until
from tests.support.workers import spawn

SPEC = "tests.support.handlers:PACED_SPEC"


def test_entries_waiting_in_a_killed_workers_batch_are_not_taken_for_a_crash_loop(r, settings):
    """Each restart re-reads the whole unacked batch (one more delivery each); only the entry in hand
    when the worker died may count as a crash."""
    producer = Producer(r, WallClock())
    n = 60
    for i in range(n):
        producer.publish("t:paced", Noop(n=i), idempotency_key=f"p{i}")
    kills = 0
    proc = spawn(SPEC, "victim", settings)
    try:
        # settings.max_attempts is 3: deliveries alone would have condemned the tail of the batch by now.
        while kills < 4 * settings.max_attempts and r.llen("t:effects") < n:
            done = r.llen("t:effects")
            wait_until(lambda d=done: r.llen("t:effects") > d, timeout=30, message="progress before the next kill")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = spawn(SPEC, "victim", settings)
        wait_until(lambda: r.llen("t:effects") == n, timeout=60, message="every entry handled")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert dlq_entries(r) == []
    assert sorted(x.decode() for x in r.lrange("t:effects", 0, -1)) == sorted(f"p{i}" for i in range(n))


@pytest.mark.parametrize("names", ["stable", "new-each-restart"])
def test_a_handler_that_kills_its_worker_is_dead_lettered_and_the_rest_goes_on(r, settings, names):
    """"new-each-restart": an orchestrator reschedules the worker on another host, so the consumer
    name changes and the dead worker's entries come back only through another consumer's claim."""
    producer = Producer(r, WallClock())
    for i in range(5):
        producer.publish("t:paced", Noop(n=i, data="die" if i == 2 else ""), idempotency_key=f"d{i}")
    restarts = 0

    def name() -> str:
        return "victim" if names == "stable" else f"victim-{restarts}"

    proc = spawn(SPEC, name(), settings)
    try:
        def dead_lettered():
            nonlocal proc, restarts
            if proc.poll() is not None:  # a supervisor restarts the dead worker
                restarts += 1
                proc = spawn(SPEC, name(), settings)
            return dlq_entries(r)

        [(_, letter)] = wait_until(dead_lettered, timeout=120, interval=0.1, message="the killer entry dead-lettered")
        wait_until(lambda: r.llen("t:effects") == 4, timeout=30, message="the other entries handled")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    assert "the worker died" in letter.reason and letter.reason.startswith(f"the worker died {settings.max_attempts}")
    assert letter.entry_id and restarts >= settings.max_attempts
    assert open_store(settings.store_url).get("effects", "d2") is None
    assert not r.hgetall(keys.inhand_key(keys.group("t-paced")))  # no marker left behind
