"""Redis connections (single node or Cluster), the retry policy for transient errors, and the wait for a
replica before an acknowledgement depends on a write."""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis
import redis.cluster
from loguru import logger
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    OutOfMemoryError,
    RedisClusterException,
    TimeoutError,
    TryAgainError,
)
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential_jitter

# OutOfMemoryError: Redis refusing writes past ``maxmemory`` (noeviction, the policy streams need) is a state
# of the server, not of the command; it ends when keys expire or an operator raises the limit. Retried like
# a failover. A worker's batch commits all or nothing on one node (workers/flush.py), so a refused write
# acks nothing.
TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, ClusterDownError, TryAgainError, OutOfMemoryError)


def is_transient(exc: BaseException) -> bool:
    """A Redis error worth retrying. Besides ``TRANSIENT``: redis-py's cluster client, between a connection
    error and its slot-map refresh, can have no default node to resolve a command's keys against. Up to
    8.1 that surfaced as an AttributeError raised inside redis-py ("'NoneType' object has no attribute
    'redis_connection'", redis/redis-py#3458); from 8.2 as a RedisClusterException saying so. The next
    try works either way. Other RedisClusterExceptions (a command it cannot route) are not transient."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, RedisClusterException):
        return "no default node" in str(exc)
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


# --- replication -------------------------------------------------------------------------------------
# Redis replicates asynchronously: a master can answer OK to an XADD and die before its replica has the
# entry; the replica promoted in its place never had it. If the consumer-group ack of the entry that
# caused the XADD has gone out, the message is lost for good (the cluster drill lost a SubmitOrder that
# way: S3 had decided, S4 never saw the intent). ``WAIT 1`` on the connection that wrote blocks until one
# replica confirms everything that connection wrote, so the writers that acknowledge something queue it
# after their writes and before their acks (``workers/flush.Commit``, the scheduler's firing, the
# producer). A shard without a replica has nothing to wait for (a single server, a promoted master until
# a replica attaches again): ``INFO replication`` says how many each node has, re-read every few seconds.
# A WAIT that times out (the replica down or far behind) lets the write's dependants go on and is logged:
# holding the worker would not make the write any safer.

REPLICA_WAIT_MS = 1000  # the longest a writer waits for a replica's confirmation
REPLICA_INFO_TTL_S = 5.0  # how long a node's replica count is trusted
_replicas: dict[str, tuple[float, int]] = {}  # node "host:port" -> (monotonic read time, connected replicas)


def _node_of(r, key: str):
    return r.get_node_from_key(key) if is_cluster(r) else None


def _name(r, node) -> str:
    if node is not None:
        return node.name
    kw = r.connection_pool.connection_kwargs
    return f"{kw.get('host', kw.get('path', ''))}:{kw.get('port', '')}"


def _has_replica(r, node, name: str) -> bool:
    now = time.monotonic()
    read_at, n = _replicas.get(name, (float("-inf"), 0))
    if now - read_at > REPLICA_INFO_TTL_S:
        info = r.info("replication", target_nodes=node) if node is not None else r.info("replication")
        n = int(info.get("connected_slaves", 0))
        _replicas[name] = (now, n)
    return n > 0


def replicated_nodes(r, written: Iterable[str]) -> dict[str, object]:
    """The nodes holding one of the ``written`` keys that have a replica to wait for: name -> cluster node
    (None on a single server)."""
    if not is_cluster(r):  # one node, however many keys: no per-key lookup on the flush path
        name = _name(r, None)
        return {name: None} if _has_replica(r, None, name) else {}
    nodes: dict[str, object] = {}
    for key in written:
        node = _node_of(r, key)
        nodes.setdefault(node.name, node)
    return {name: node for name, node in nodes.items() if _has_replica(r, node, name)}


def queue_replica_waits(r, pipe, written: Iterable[str]) -> list[str]:
    """Queue ``WAIT 1`` on ``pipe`` for each node holding one of the ``written`` keys (already queued on
    ``pipe``: a pipeline sends one node's commands on one connection, in order) that has a replica.
    Returns the nodes waited on, in the order their replies come; pass them to ``check_replica_waits``."""
    return queue_waits(pipe, replicated_nodes(r, written))


def queue_waits(pipe, nodes: dict[str, object]) -> list[str]:
    """``queue_replica_waits`` for the nodes ``replicated_nodes`` returned."""
    for node in nodes.values():
        if node is None:
            pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
        else:
            pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS, target_nodes=node)
    return list(nodes)


def check_replica_waits(queued: list[str], replies: list) -> int:
    """The WAIT replies of ``queued``: returns how many nodes confirmed no replica within the wait (each
    logged, its replica count re-read next time)."""
    late = 0
    for name, got in zip(queued, replies, strict=True):
        if isinstance(got, Exception):
            raise got
        if int(got) < 1:
            late += 1
            _replicas.pop(name, None)
            logger.warning(f"no replica of {name} confirmed a write within {REPLICA_WAIT_MS} ms; going on "
                           "unreplicated")
    return late


def execute_replicated(r, pipe, written: list[str]) -> list:
    """Run ``pipe`` (its commands write ``written``, in order) followed by the replica waits for them;
    raise the first error among the writes; return the writes' replies."""
    n = len(pipe)
    waits = queue_replica_waits(r, pipe, written)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[:n]:
        if isinstance(reply, Exception):
            raise reply
    check_replica_waits(waits, replies[n:])
    return replies[:n]
