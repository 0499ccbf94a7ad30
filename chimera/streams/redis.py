"""Redis connections (single node or Cluster) and the retry policy for transient errors."""

from __future__ import annotations

import redis
import redis.cluster
from redis.exceptions import BusyLoadingError, ClusterDownError, ConnectionError, TimeoutError, TryAgainError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential_jitter

TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, ClusterDownError, TryAgainError)


def is_transient(exc: BaseException) -> bool:
    """A Redis error worth retrying. Besides ``TRANSIENT``: an AttributeError raised inside redis-py's
    cluster client, which between a connection error and its slot-map refresh can have no default node
    ("'NoneType' object has no attribute 'redis_connection'", redis/redis-py#3458); the next try works."""
    if isinstance(exc, TRANSIENT):
        return True
    if not isinstance(exc, AttributeError) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__", "").startswith("redis.")


# One small policy instead of try/excepts scattered over the code: transient Redis errors
# (failover, restart, reshard) are retried for up to 30 s with jittered backoff.
retry_redis = retry(
    retry=retry_if_exception(is_transient),
    wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05),
    stop=stop_after_delay(30),
    reraise=True,
)


def connect(url: str, cluster: bool = False, **kw) -> redis.Redis:
    if url.startswith("redis+cluster://"):
        url, cluster = "redis://" + url[len("redis+cluster://"):], True
    if cluster:
        return redis.cluster.RedisCluster.from_url(
            url, decode_responses=False, socket_timeout=10, retry=None, **kw
        )
    return redis.Redis.from_url(url, decode_responses=False, socket_timeout=10, health_check_interval=30, **kw)


def is_cluster(r) -> bool:
    return isinstance(r, redis.cluster.RedisCluster)


def keyslot(key: str) -> int:
    from redis.crc import key_slot

    return key_slot(key.encode())
