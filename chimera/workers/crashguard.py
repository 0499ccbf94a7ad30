"""Crash-loop guard: count the workers that died while handling an entry.

Deliveries alone cannot tell a handler that kills its worker from entries that merely sat in a
killed worker's read batch (each restart or claim re-reads them all). So a redelivered entry is
marked "in hand" while its handler runs, in one hash per group keyed by the entry, which any
replica can find again: the consumer name may change between restarts (an orchestrator moves
the worker to another host). Whoever handles the entry next and finds a marker left behind
books one crash against it. First deliveries are not marked, so the common path costs nothing.
"""

from __future__ import annotations

from chimera.streams import keys
from chimera.streams.redis import retry_redis

# Book a crash if the previous handler left its marker, then put ours; returns the crash count.
# Both keys carry the group's hash tag, so this is legal on a cluster.
_TAKE = """
local field = ARGV[1] .. '#crash'
local crashes
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  crashes = redis.call('HINCRBY', KEYS[2], field, 1)
else
  crashes = tonumber(redis.call('HGET', KEYS[2], field) or '0')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return crashes
"""


class CrashGuard:
    def __init__(self, r, group: str, consumer: str) -> None:
        self.r = r
        self.consumer = consumer
        self.inhand = keys.inhand_key(group)
        self.fails = keys.fails_key(group)

    @retry_redis
    def take(self, ref: str, now_ms: int) -> int:
        """Mark ``ref`` ("<stream>/<entry id>") in hand; returns how many workers died handling it."""
        return int(self.r.eval(_TAKE, 2, self.inhand, self.fails, ref, f"{self.consumer}@{now_ms}"))

    @retry_redis
    def count_failure(self, ref: str) -> int:
        """One more handler failure of ``ref``; returns the failures so far (kept apart from crashes)."""
        return int(self.r.hincrby(self.fails, ref, 1))

    @retry_redis
    def release(self, ref: str) -> None:
        self.r.hdel(self.inhand, ref)

    def forget(self, pipe, refs: list[str]) -> None:
        """Drop the counts and any stale marker of acked entries (in the batch's commit pipeline)."""
        pipe.hdel(self.fails, *refs, *(f"{ref}#crash" for ref in refs))
        pipe.hdel(self.inhand, *refs)
