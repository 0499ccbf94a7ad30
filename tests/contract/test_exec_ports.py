"""One contract for S4's execution-metrics port: the in-memory implementation, a single Redis and the 6-node
cluster answer the same. The Redis one must keep the keys the gateway's ``/metrics`` and S11 read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from chimera.ports.exec_metrics import ACK_SAMPLES, MemoryExecMetrics, RedisExecMetrics
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.redis import connect
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context
from tests.conftest import _flush as flush


@pytest.fixture(params=["memory", "single", "cluster"])
def backend(request):
    if request.param == "memory":
        yield MemoryExecMetrics(), None
        return
    server = request.getfixturevalue("redis_server" if request.param == "single" else "redis_cluster")
    r = connect(server.url)
    flush(r)
    yield RedisExecMetrics(r), r
    r.close()


def test_counts_once_per_subject_and_plainly_without_one(backend):
    port, _ = backend
    assert port.counters() == {}
    assert port.count("maker_sent_count", "i-1") is True
    assert port.count("maker_sent_count", "i-1") is False  # a redelivery passing the same point
    assert port.count("maker_sent_count", "i-2") is True
    assert port.count("maker_filled_count", "i-1") is True  # once per (name, subject), not per subject
    assert port.count("guard_fired_count") is True
    assert port.count("guard_fired_count") is True
    assert port.counters() == {"maker_sent_count": 2, "maker_filled_count": 1, "guard_fired_count": 2}


def test_concurrent_redeliveries_count_once(backend):
    port, _ = backend
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda _: port.count("maker_timeout_count", "i-race"), range(32)))
    assert won.count(True) == 1
    assert port.counters() == {"maker_timeout_count": 1}


def test_ack_samples_newest_first_and_bounded(backend):
    port, _ = backend
    assert port.ack_samples() == []
    for ms in (5, -3, 7):
        port.sample_ack_ms(ms)
    assert port.ack_samples() == [7, 0, 5]  # a negative latency (clock skew) is recorded as 0
    for ms in range(ACK_SAMPLES + 10):
        port.sample_ack_ms(ms)
    samples = port.ack_samples()
    assert len(samples) == ACK_SAMPLES and samples[0] == ACK_SAMPLES + 9 and samples[-1] == 10


def test_redis_keeps_the_keys_the_gateway_reads(backend):
    port, r = backend
    if r is None:
        pytest.skip("the key layout is a Redis matter")
    port.count("maker_sent_count", "i-1")
    port.sample_ack_ms(42)
    assert int(r.hget(keys.ROUTER_COUNTERS, "maker_sent_count")) == 1
    assert r.exists(keys.router_counted("maker_sent_count", "i-1"))
    assert r.pttl(keys.router_counted("maker_sent_count", "i-1")) > 0  # markers expire
    assert [int(x) for x in r.lrange(keys.ROUTER_ACK_MS, 0, -1)] == [42]


def test_context_gets_the_runtime_s_port(backend):
    port, r = backend
    ctx = Context(clock=ManualClock(0), store=open_store("memory://"), config=ActiveConfig(), redis=r)
    assert isinstance(ctx.exec_metrics, RedisExecMetrics if r is not None else MemoryExecMetrics)
    injected = Context(clock=ManualClock(0), store=open_store("memory://"), config=ActiveConfig(),
                       exec_metrics=port)
    assert injected.exec_metrics is port
