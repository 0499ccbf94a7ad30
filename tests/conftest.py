"""Session fixtures: a real redis-server, a real 6-node Redis Cluster, stores and settings."""

from __future__ import annotations

import os

import pytest

from chimera.ops.settings import Settings
from chimera.streams.redis import connect
from tests.support.redis_servers import RedisCluster, RedisServer


def pytest_configure(config) -> None:
    """Each xdist worker (and what it starts) picks ports from its own slice: no two race for one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and count.isdigit():
        os.environ["CHIMERA_PORT_SLICE"] = f"{int(worker[2:])}/{int(count)}"


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster():
    cluster = RedisCluster()
    yield cluster
    cluster.stop()


def _flush(r) -> None:
    if hasattr(r, "get_primaries"):
        r.flushall(target_nodes="primaries")
    else:
        r.flushall()


@pytest.fixture(params=["single", "cluster"])
def redis_url(request) -> str:
    """Every Redis-touching test runs against a standalone server and against the cluster."""
    if request.param == "single":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster").url
    r = connect(url)
    _flush(r)
    r.close()
    return url


@pytest.fixture
def r(redis_url):
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(redis_url, tmp_path) -> Settings:
    return Settings(
        redis_url=redis_url.replace("redis+cluster://", "redis://"),
        redis_cluster=redis_url.startswith("redis+cluster://"),
        store_url=f"sqlite:///{tmp_path}/store.sqlite",
        objects_url=f"file://{tmp_path}/objects",
        claim_idle_ms=300,
        block_ms=50,
        lease_ttl_ms=1000,
        lock_ttl_ms=2000,
        max_attempts=3,
    )


def subprocess_env(settings: Settings, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "CHIMERA_REDIS_URL": ("redis+cluster://" + settings.redis_url[len("redis://"):]) if settings.redis_cluster else settings.redis_url,
        "CHIMERA_STORE_URL": settings.store_url,
        "CHIMERA_OBJECTS_URL": settings.objects_url,
        "CHIMERA_CLAIM_IDLE_MS": str(settings.claim_idle_ms),
        "CHIMERA_BLOCK_MS": str(settings.block_ms),
        "CHIMERA_LEASE_TTL_MS": str(settings.lease_ttl_ms),
        "CHIMERA_MAX_ATTEMPTS": str(settings.max_attempts),
        "CHIMERA_LOG_JSON": "0",
        "CHIMERA_LOG_LEVEL": "WARNING",
    })
    env.update(extra)
    return env
