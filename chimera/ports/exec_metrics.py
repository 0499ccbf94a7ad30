"""S4's execution figures behind a port: maker counters (once per intent) and command -> ack latencies.

The router counts ``maker_sent_count`` / ``maker_filled_count`` / ``maker_timeout_count`` /
``maker_reject_count`` / ``guard_fired_count`` and samples the command -> venue-ack latency of each
leg (``router_p95``). A redelivered entry passes the same point again, so a count with a subject
(the intent id) happens at most once per subject, whatever the crashes.

``RedisExecMetrics`` keeps the keys the gateway's ``/metrics`` and S11 read: the hash
``ord:{metrics}:router``, its once-markers ``ord:{metrics}:router:counted:<name>:<subject>`` and the
list ``ord:{metrics}:router:ack_ms``; all share the ``{metrics}`` tag, so the count-once script
touches one cluster slot. ``MemoryExecMetrics`` serves the in-process runtime with the same rules.
"""

from __future__ import annotations

import threading
from typing import Protocol

from chimera.streams import keys

ACK_SAMPLES = 1000  # latencies kept for router_p95: recent enough to move, enough for a stable tail
COUNTED_TTL_MS = 7 * 24 * 3600 * 1000  # longer than any redelivery of the same intent can arrive

# Marker and increment in one step: no crash can leave the marker without the count.
_COUNT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
return false
"""


class ExecMetrics(Protocol):
    def count(self, name: str, subject: str | None = None) -> bool:
        """``name`` += 1; with ``subject`` at most once per (name, subject). True if this call counted."""

    def sample_ack_ms(self, ms: int) -> None:
        """One command -> venue-ack latency; only the newest ``ACK_SAMPLES`` are kept."""

    def counters(self) -> dict[str, int]: ...

    def ack_samples(self) -> list[int]:
        """Newest first."""


class RedisExecMetrics:
    def __init__(self, r) -> None:
        self.r = r

    def count(self, name: str, subject: str | None = None) -> bool:
        if subject is None:
            self.r.hincrby(keys.ROUTER_COUNTERS, name, 1)
            return True
        return self.r.eval(_COUNT_ONCE, 2, keys.ROUTER_COUNTERS, keys.router_counted(name, subject), name,
                           COUNTED_TTL_MS) is not None

    def sample_ack_ms(self, ms: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(keys.ROUTER_ACK_MS, max(0, int(ms)))
        pipe.ltrim(keys.ROUTER_ACK_MS, 0, ACK_SAMPLES - 1)
        pipe.execute()

    def counters(self) -> dict[str, int]:
        raw = self.r.hgetall(keys.ROUTER_COUNTERS) or {}
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    def ack_samples(self) -> list[int]:
        return [int(x) for x in self.r.lrange(keys.ROUTER_ACK_MS, 0, -1)]


class MemoryExecMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._counted: set[tuple[str, str]] = set()
        self._acks: list[int] = []

    def count(self, name: str, subject: str | None = None) -> bool:
        with self._lock:
            if subject is not None:
                if (name, subject) in self._counted:
                    return False
                self._counted.add((name, subject))
            self._counts[name] = self._counts.get(name, 0) + 1
            return True

    def sample_ack_ms(self, ms: int) -> None:
        with self._lock:
            self._acks.insert(0, max(0, int(ms)))
            del self._acks[ACK_SAMPLES:]

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def ack_samples(self) -> list[int]:
        with self._lock:
            return list(self._acks)
