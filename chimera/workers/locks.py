"""TTL locks with owner and fencing tokens, and the idempotency helper (ARCHITECTURE §2.5)."""

from __future__ import annotations

import time
import uuid

from chimera.streams import keys
from chimera.streams.redis import retry_redis

# The lock key and its fencing counter share a hash tag, so this is legal on a cluster.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""
# Owner-checked release and renewal, shared with leases: only the holder's token may touch the key.
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
COMPARE_AND_PEXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Lock:
    """``with Lock(r, key, ttl_ms) as lock: ... lock.fence``; raises LockBusy if held elsewhere."""

    def __init__(self, r, key: str, ttl_ms: int, owner: str | None = None) -> None:
        self.r = r
        self.key = keys.lock_key(key)
        self.ttl_ms = ttl_ms
        self.owner = owner or uuid.uuid4().hex
        self.fence = 0

    @retry_redis
    def acquire(self, wait_ms: int = 0) -> bool:
        deadline = time.monotonic() + wait_ms / 1000
        delay = 0.002
        while True:
            token = self.r.eval(_ACQUIRE, 2, self.key, keys.fence_key(self.key), self.owner, self.ttl_ms)
            if token:
                self.fence = int(token)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    @retry_redis
    def release(self) -> bool:
        return bool(self.r.eval(COMPARE_AND_DELETE, 1, self.key, self.owner))

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise LockBusy(self.key)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class LockBusy(Exception):
    pass


class Idempotency:
    """Remembers which idempotency keys a group has fully handled (marker with a TTL)."""

    def __init__(self, r, group: str, ttl_s: int) -> None:
        self.r = r
        self.group = group
        self.ttl_s = ttl_s

    def key(self, idem: str) -> str:
        return keys.idem_key(self.group, idem)

    def mark(self, pipe, idem: str) -> None:
        pipe.set(self.key(idem), b"1", ex=self.ttl_s)
