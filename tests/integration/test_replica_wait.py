"""An ack waits until a replica holds what it depends on (streams/redis.py, "replication").

Redis replicates asynchronously. Without the wait, a worker's flush could XADD its output on a master,
acknowledge its input, and the master die before its replica had the output: the promoted replica never
had it and nothing would deliver it again (the cluster drill lost a SubmitOrder that way). These tests
freeze the replica (SIGSTOP) so the window stays open as long as they need, on a cluster of their own.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback

import pytest
import redis as redis_lib
from loguru import logger

import chimera.streams.redis as chimera_redis
from chimera.streams import keys
from chimera.streams.redis import connect, queue_replica_waits
from chimera.workers.crashguard import CrashGuard
from chimera.workers.flush import Commit
from chimera.workers.locks import Idempotency
from tests.support.polling import wait_until
from tests.support.redis_servers import RedisCluster

GROUP = "g-replica-wait"


@pytest.fixture
def cluster():
    """Its own cluster: a test freezes a replica and kills its master."""
    c = RedisCluster()
    yield c
    for n in c.nodes:  # a frozen process would not stop
        if n.proc.poll() is None:
            n.proc.send_signal(signal.SIGCONT)
    c.stop()


def _on_other_masters(r) -> tuple[str, str]:
    """An output stream and an input stream held by two different masters; the output's master does not
    hold the group's done-markers either (a marker beside the output would share its fate)."""
    node = lambda key: r.get_node_from_key(key).name  # noqa: E731
    out = next(f"t:{{out-{i}}}" for i in range(1000) if node(f"t:{{out-{i}}}") != node(keys.idem_key(GROUP, "x")))
    src = next(f"t:{{src-{i}}}" for i in range(1000) if node(f"t:{{src-{i}}}") != node(out))
    return out, src


def _replica_of(cluster: RedisCluster, port: int):
    info = redis_lib.Redis(port=port).info("replication")
    replica = int(info["slave0"]["port"])
    return next(n for n in cluster.nodes if n.port == replica)


def _read_one(r, src: str) -> str:
    r.xgroup_create(src, GROUP, id="0", mkstream=True)
    r.xadd(src, {"n": "1"})
    [(_stream, [(entry_id, _fields)])] = r.xreadgroup(GROUP, "c1", {src: ">"}, count=1)
    return entry_id.decode()


def _pending(r, src: str) -> int:
    return r.xpending(src, GROUP)["pending"]


def _commit(r) -> Commit:
    return Commit(r, GROUP, Idempotency(r, GROUP, 60), CrashGuard(r, GROUP, "c1"))


def test_an_acked_or_done_input_keeps_its_output_when_the_master_dies_before_its_replica_had_it(cluster, monkeypatch):
    # The window stays open until the kill (a second or two from the flush's start). Not longer than the
    # client's 10 s socket timeout: when the master dies, redis-py re-sends the failed WAIT on its own to
    # the promoted node, which has no replica, so that WAIT sits out its whole time (CI runs 41 and 43:
    # with 120 s it outlived the test's 60 s join, each try ending in a socket timeout and a new try).
    monkeypatch.setattr(chimera_redis, "REPLICA_WAIT_MS", 8_000)
    r = connect(cluster.url)
    out, src = _on_other_masters(r)
    entry_id = _read_one(r, src)
    master = next(n for n in cluster.nodes if n.port == r.get_node_from_key(out).port)
    replica = _replica_of(cluster, master.port)
    wait_until(lambda: redis_lib.Redis(port=master.port).info("replication")["slave0"]["state"] == "online",
               timeout=30, message="the replica in sync")

    assert queue_replica_waits(r, r.pipeline(transaction=False), [out]) == [f"127.0.0.1:{master.port}"]
    # Cut the replica off the master's stream: frozen, then its link closed by the master (a frozen
    # process would still find what the kernel buffered for it when it wakes).
    replica.proc.send_signal(signal.SIGSTOP)
    redis_lib.Redis(port=master.port).client_kill_filter(_type="replica")
    wait_until(lambda: redis_lib.Redis(port=master.port).info("replication")["connected_slaves"] == 0, timeout=10,
               message="the replica's link closed")
    commit = _commit(r)
    commit.emits.append((out, {"n": "out-1"}))
    commit.marks.append("entry-1")  # the done-marker, on a master that stays up
    commit.ack(src, entry_id, redelivered=False)
    marker = keys.idem_key(GROUP, "entry-1")
    errors: list[BaseException] = []

    def flush():
        try:
            commit.flush()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
    worker = threading.Thread(target=flush, daemon=True)
    worker.start()
    wait_until(lambda: redis_lib.Redis(port=master.port).xlen(out) == 1, timeout=10,
               message="the output written on the master")
    worker.join(1.0)  # an unguarded flush acks within a millisecond of its output
    assert worker.is_alive() and _pending(r, src) == 1, "the input was acked while only the master held its output"
    # A worker killed now must find its input undone when it comes back: a marker already written
    # would make the redelivery a duplicate, acked without its output (the cluster drill lost two
    # SubmitOrders that way).
    assert not r.exists(marker), "the done-marker was written while only the master held the output"

    # Our own retries wait as long as production's do (a retry may route its WAIT by a stale slot map).
    monkeypatch.setattr(chimera_redis, "REPLICA_WAIT_MS", 1000)
    master.kill()  # the output dies with it: the replica never received it, and is promoted
    replica.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: redis_lib.Redis(port=replica.port).info("replication")["role"] == "master", timeout=60,
               message="the replica promoted")
    cluster.wait_ok()
    worker.join(60)
    stuck = "".join(traceback.format_stack(sys._current_frames()[worker.ident])) if worker.is_alive() else ""
    print(stuck)  # where the flush hangs, whole (an assertion message is cut short)
    assert not worker.is_alive() and not errors, (errors, stuck)
    # The flush failed with its master, wrote its output again on the promoted replica, then acked. Possibly
    # twice (CI run 31, under load): a retry whose XADD redis-py redirected to the new master, while its WAIT
    # (queued for the node the slot map still named) failed with the dead one, is sent again whole. That is
    # the flush's contract, "emits again at worst" (consumers de-duplicate by the envelope's key): what this
    # test guards is that the output is not lost.
    outs = [f[b"n"] for _id, f in r.xrange(out)]
    assert outs and set(outs) == {b"out-1"}, outs
    assert _pending(r, src) == 0 and r.exists(marker)


def test_a_replica_that_does_not_confirm_delays_the_ack_by_the_wait_only(cluster, monkeypatch):
    monkeypatch.setattr(chimera_redis, "REPLICA_WAIT_MS", 300)
    r = connect(cluster.url)
    out, src = _on_other_masters(r)
    entry_id = _read_one(r, src)
    master_port = r.get_node_from_key(out).port
    replica = _replica_of(cluster, master_port)
    wait_until(lambda: redis_lib.Redis(port=master_port).info("replication")["slave0"]["state"] == "online",
               timeout=30, message="the replica in sync")
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    replica.proc.send_signal(signal.SIGSTOP)
    try:
        commit = _commit(r)
        commit.emits.append((out, {"n": "out-1"}))
        commit.ack(src, entry_id, redelivered=False)
        commit.flush()
    finally:
        replica.proc.send_signal(signal.SIGCONT)
        logger.remove(sink)
    # Holding the worker would not make the write safer: it goes on, acked, and says so.
    assert _pending(r, src) == 0 and r.xlen(out) == 1
    assert any(f"no replica of 127.0.0.1:{master_port} confirmed a write within 300 ms" in w for w in warnings), warnings


def test_a_server_without_a_replica_is_not_waited_on(redis_server):
    r = connect(redis_server.url)
    pipe = r.pipeline(transaction=False)
    pipe.xadd("t:solo", {"n": "1"})
    assert queue_replica_waits(r, pipe, ["t:solo"]) == [] and len(pipe) == 1
