"""Leases: replicas of an ordered role split its streams like Kafka partitions.

Each stream has a lease key ``lease:{role}:<stream>`` (SET NX PX, renewed by heartbeat). Live
replicas register in ``members:{role}`` (a ZSET of heartbeat times); each aims for a fair share
``ceil(streams / members)`` and gives back extras so a new replica gets work. A dead owner's
leases expire after the TTL and are taken over; the new owner first claims the old owner's
pending entries so nothing is skipped and order is kept.

An owner also keeps a local deadline per lease (last renewal + ``SAFE_FRACTION`` of the TTL): a
replica stalled mid-batch past it stops handling that stream before Redis lets another replica take
it, so two owners never handle the same stream at once. If nobody took it meanwhile, the next beat
wins it back (the key still holds our token) as a new acquisition, which claims the entries left
pending in our own PEL first.

A rebalance is a hand-back: the replica over its share deletes the lease key and the one under it
acquires it on its next beat (up to a third of the TTL later). In between **nobody holds the
stream**: its entries wait, none is lost or handled twice, but "who owns X" is only meaningful once
the members have settled (``tests/support/polling.leases_settled``). The first replica to start
holds every stream until the others register, so a fleet always goes through one hand-back.
"""

from __future__ import annotations

import math
import threading
import time

from chimera.streams import keys
from chimera.streams.redis import retry_redis
from chimera.workers.locks import COMPARE_AND_DELETE, COMPARE_AND_PEXPIRE

SAFE_FRACTION = 0.8  # of the TTL: the local deadline stays ahead of the key's expiry in Redis

# Ours again if the key is absent or still holds our token (a lease we gave up locally).
ACQUIRE_OR_KEEP = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not cur then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""


class LeaseManager:
    def __init__(self, r, role: str, owner: str, streams: list[str], ttl_ms: int, monotonic=time.monotonic) -> None:
        self.r = r
        self.role = role
        self.owner = owner.encode()
        self.streams = list(streams)
        self.ttl_ms = ttl_ms
        self.owned: set[str] = set()
        self.newly_acquired: set[str] = set()
        self._renewed: dict[str, float] = {}  # stream -> monotonic time of the last renewal
        self._monotonic = monotonic
        self._lock = threading.Lock()

    def _key(self, stream: str) -> str:
        return keys.lease_key(self.role, stream)

    @retry_redis
    def heartbeat(self, now_ms: int | None = None) -> set[str]:
        """Renew, rebalance and acquire. Returns the streams owned after this beat."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        members_key = keys.members_key(self.role)
        self.r.zadd(members_key, {self.owner: now_ms})
        self.r.zremrangebyscore(members_key, 0, now_ms - self.ttl_ms)
        members = max(1, self.r.zcard(members_key))
        share = math.ceil(len(self.streams) / members)
        with self._lock:
            for stream in list(self.owned):
                began = self._monotonic()
                if self.r.eval(COMPARE_AND_PEXPIRE, 1, self._key(stream), self.owner, self.ttl_ms):
                    self._renewed[stream] = began
                else:
                    self.owned.discard(stream)  # expired and taken: it is someone else's now
            for stream in self.streams:
                if len(self.owned) >= share:
                    break
                began = self._monotonic()
                if stream not in self.owned and self.r.eval(ACQUIRE_OR_KEEP, 1, self._key(stream), self.owner,
                                                            self.ttl_ms):
                    self.owned.add(stream)
                    self.newly_acquired.add(stream)
                    self._renewed[stream] = began
            return set(self.owned)

    def excess(self) -> list[str]:
        """Streams above the fair share, to hand back between entries."""
        members = max(1, self.r.zcard(keys.members_key(self.role)))
        share = math.ceil(len(self.streams) / members)
        with self._lock:
            return sorted(self.owned)[share:]

    @retry_redis
    def release(self, stream: str) -> None:
        with self._lock:
            self.r.eval(COMPARE_AND_DELETE, 1, self._key(stream), self.owner)
            self.owned.discard(stream)
            self.newly_acquired.discard(stream)

    def take_new(self) -> set[str]:
        with self._lock:
            new, self.newly_acquired = self.newly_acquired & self.owned, set()
            return new  # only streams still ours: claiming another owner's pending entries would strand them

    def still_owns(self, stream: str) -> bool:
        """Owned and renewed recently enough that no other replica can have taken it yet."""
        with self._lock:
            if stream not in self.owned:
                return False
            if self._monotonic() - self._renewed.get(stream, 0.0) > self.ttl_ms * SAFE_FRACTION / 1000:
                self.owned.discard(stream)  # given up locally; the next beat may win it back
                return False
            return True

    def release_all(self) -> None:
        for stream in list(self.owned):
            self.release(stream)
        self.r.zrem(keys.members_key(self.role), self.owner)


class SingletonLease:
    """Exactly one active holder (the scheduler): SET NX PX + renew by owner token."""

    def __init__(self, r, key: str, owner: str, ttl_ms: int) -> None:
        self.r, self.key, self.owner, self.ttl_ms = r, key, owner.encode(), ttl_ms
        self.held = False

    @retry_redis
    def tick(self) -> bool:
        if self.held and self.r.eval(COMPARE_AND_PEXPIRE, 1, self.key, self.owner, self.ttl_ms):
            return True
        self.held = bool(self.r.set(self.key, self.owner, nx=True, px=self.ttl_ms))
        return self.held

    def release(self) -> None:
        if self.held:
            self.r.eval(COMPARE_AND_DELETE, 1, self.key, self.owner)
            self.held = False
