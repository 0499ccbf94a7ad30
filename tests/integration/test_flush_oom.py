"""A write Redis refuses acks nothing (workers/flush.py).

Past ``maxmemory`` (noeviction, the policy streams need) Redis refuses XADD and EVAL but still takes
XACK. A worker's commit used to send its emits, timers, done-markers and acks in one plain pipeline,
which runs every command whatever the one before it answered: the output was refused, the input
acked, and the message lost for good. Now nothing of the batch lands until all of it can, and the
commit waits for memory like it waits out a failover. On one node, alone and with a replica (the two
paths of ``Commit.flush``); the cluster's path is covered in test_replica_wait.py.
"""

from __future__ import annotations

import threading

import pytest

from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Noop
from chimera.streams.redis import connect
from chimera.workers import scheduler, traces
from chimera.workers.crashguard import CrashGuard
from chimera.workers.flush import Commit
from chimera.workers.locks import Idempotency
from tests.support.polling import wait_until
from tests.support.redis_servers import RedisServer

GROUP = "g-oom"


@pytest.fixture(params=["alone", "with a replica"])
def node(request):
    master = RedisServer()
    replica = None
    if request.param == "with a replica":
        replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)])
        r = connect(master.url)
        wait_until(lambda: r.info("replication")["connected_slaves"] == 1, timeout=20, message="replica attached")
    yield master
    for server in (replica, master):
        if server is not None:
            server.stop()


def _pending_ids(r) -> list[bytes]:
    return [p["message_id"] for p in r.xpending_range("t:src", GROUP, min="-", max="+", count=10)]


def _refused_writes(r) -> int:
    stat = r.info("errorstats").get("errorstat_OOM", {})
    return int(stat.get("count", 0))


def test_a_write_refused_past_maxmemory_acks_nothing_and_lands_once_memory_is_free(node):
    r = connect(node.url)
    r.xgroup_create("t:src", GROUP, id="0", mkstream=True)
    r.xadd("t:src", {"n": "1"})
    r.xadd("t:src", {"n": "2"})
    [(_s, [(first, _f)])] = r.xreadgroup(GROUP, "c1", {"t:src": ">"}, count=1)
    # A limit 1.5 MB above what the server used before 4 MB of filler (a replica's backlog is 1 MB of it).
    used = r.info("memory")["used_memory"]
    r.set("t:filler", b"x" * 4_000_000)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", used + 1_500_000)
    with pytest.raises(Exception, match="maxmemory"):
        r.xadd("t:probe", {"n": "1"})  # the premise: the server refuses writes
    refused = _refused_writes(r)

    commit = Commit(r, GROUP, Idempotency(r, GROUP, 60), CrashGuard(r, GROUP, "c1"))
    commit.emits.append(("t:out", {"n": "out-1"}))
    commit.timers.append(("arm", "t:timer", 1_000, "t:out", {"n": "timer-1"}))
    commit.marks.append("k1")
    commit.ack("t:src", first.decode(), redelivered=True)
    commit.traces = traces.Traces(GROUP, "c1")
    commit.traces.done(Envelope(type="noop", idempotency_key="k1", payload=Noop(n=1)), "t:src", first.decode(),
                       1_000, 1_001, 1)
    read = ["XREADGROUP", "GROUP", GROUP, "c1", "COUNT", 10, "STREAMS", "t:src", ">"]
    replies: list = []
    flush = threading.Thread(target=lambda: replies.append(commit.flush(read)), daemon=True)
    flush.start()

    wait_until(lambda: _refused_writes(r) > refused, timeout=20, message="the commit's writes refused")
    assert _pending_ids(r) == [first], "the input was acked while its output was refused"
    assert not r.exists("t:out") and scheduler.armed(r, "t:timer") is None
    assert not r.exists(Idempotency(r, GROUP, 60).key("k1")), "done-marker written over a refused output"
    assert flush.is_alive(), "the commit gave up instead of waiting for memory"

    r.delete("t:filler")  # memory is free again: the same commit goes through, once
    flush.join(30)
    assert not flush.is_alive()
    assert [f[b"n"] for _, f in r.xrange("t:out")] == [b"out-1"]
    assert scheduler.armed(r, "t:timer") == 1_000
    assert r.exists(Idempotency(r, GROUP, 60).key("k1"))
    # The entry's execution trace too: a retried flush writes it again (it was dropped with the first try).
    assert [t["phase"] for t in traces.query(r, "k1", now_ms=1_001, group_names=[GROUP])] == ["START", "DONE"]
    # The first entry acked; the second, read in the same round trip, now pending with c1.
    [(_s, entries)] = replies[0]
    assert [f[b"n"] for _, f in entries] == [b"2"]
    assert _pending_ids(r) == [entries[0][0]]
