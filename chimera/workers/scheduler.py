"""The due-queue: timeouts as ZSET entries turned into stream messages (ARCHITECTURE §4).

``schedule`` stores (target stream, envelope) under a key and scores the key by due time; the
one active scheduler (``SingletonLease``) moves due entries onto their streams. Re-scheduling
a key replaces it (so a maker window can be pushed back); ``cancel`` removes it. A crash between
XADD and removal re-publishes the entry with the same idempotency key: consumers de-duplicate.
"""

from __future__ import annotations

import msgspec

from chimera.schemas.envelope import Envelope, encode
from chimera.streams import keys
from chimera.streams.redis import execute_replicated, retry_redis

_REMOVE_IF_SAME = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) and (redis.call('HGET', KEYS[2], ARGV[1]) or '') == ARGV[3] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

_item_enc = msgspec.msgpack.Encoder()
_item_dec = msgspec.msgpack.Decoder(tuple[str, dict[str, bytes]])


# Both keys share the {due} tag, so each script touches one cluster slot.
_SCHEDULE = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
"""
_CANCEL = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


def arm(pipe, key: str, due_ms: int, stream: str, fields: dict[str, bytes]) -> None:
    """Queue "publish ``fields`` on ``stream`` at ``due_ms``" on ``pipe`` (a client or a pipeline).

    ``execute_command("EVAL", ...)`` rather than ``pipe.eval``: the cluster pipeline routes EVAL by
    its keys (one slot, {due}) but does not offer ``eval`` as a method.
    """
    pipe.execute_command("EVAL", _SCHEDULE, 2, keys.SCHED_DUE, keys.SCHED_PAYLOADS, key, due_ms,
                         _item_enc.encode((stream, fields)))


def disarm(pipe, key: str) -> None:
    pipe.execute_command("EVAL", _CANCEL, 2, keys.SCHED_DUE, keys.SCHED_PAYLOADS, key)


@retry_redis
def schedule(r, key: str, due_ms: int, stream: str, env: Envelope) -> None:
    """Arm a timer outside a handler (operators, tests). Handlers *return* timers instead."""
    arm(r, key, due_ms, stream, encode(env))


@retry_redis
def cancel(r, key: str) -> bool:
    return bool(r.execute_command("EVAL", _CANCEL, 2, keys.SCHED_DUE, keys.SCHED_PAYLOADS, key))


@retry_redis
def armed(r, key: str) -> int | None:
    """The due time of the timer ``key``, or None when it is not armed."""
    score = r.zscore(keys.SCHED_DUE, key)
    return None if score is None else int(score)


@retry_redis
def fire_due(r, now_ms: int, limit: int = 500) -> int:
    """Publish every entry due at ``now_ms``. Returns how many were published."""
    due = r.zrangebyscore(keys.SCHED_DUE, 0, now_ms, start=0, num=limit, withscores=True)
    raws = [r.hget(keys.SCHED_PAYLOADS, key) for key, _score in due]
    pipe, written = r.pipeline(transaction=False), []
    for raw in raws:
        if raw is not None:
            stream, fields = _item_dec.decode(raw)
            pipe.xadd(stream, fields)
            written.append(stream)
    if written:
        # A timer leaves the due-queue only once a replica holds its entry (streams/redis.py, "replication").
        execute_replicated(r, pipe, written)
    for (key, score), raw in zip(due, raws, strict=True):
        # Remove only the version we published: a concurrent re-schedule keeps its new due time.
        r.eval(_REMOVE_IF_SAME, 2, keys.SCHED_DUE, keys.SCHED_PAYLOADS, key, repr(score), raw or b"")
    return len(written)


@retry_redis
def pending(r) -> int:
    return r.zcard(keys.SCHED_DUE)
