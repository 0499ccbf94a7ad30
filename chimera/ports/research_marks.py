"""High-water marks behind a port (handlers never touch Redis): S7's ``labels:{last_backfill_ts}``
(``ctx.marks``) and S9's ``bt:{last_run_ts}`` (``ctx.bt_marks``).

``set_max(field, ms)`` only moves a field forward, so a late or replayed backfill never moves the
watermark back. Redis: one HASH (one slot), the compare-and-set in a small script; memory: a dict.
"""

from __future__ import annotations

import threading
from typing import Protocol

from chimera.streams import keys

# Forward only: a replay of an older backfill must not rewind the watermark.
_SET_MAX = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


class Marks(Protocol):
    def set_max(self, field: str, ms: int) -> bool: ...

    def get(self, field: str) -> int | None: ...


class RedisMarks:
    def __init__(self, r, key: str = keys.LABELS_LAST_BACKFILL) -> None:
        self.r, self.key = r, key

    def set_max(self, field: str, ms: int) -> bool:
        return bool(self.r.eval(_SET_MAX, 1, self.key, field, int(ms)))

    def get(self, field: str) -> int | None:
        v = self.r.hget(self.key, field)
        return None if v is None else int(v)


class MemoryMarks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._d: dict[str, int] = {}

    def set_max(self, field: str, ms: int) -> bool:
        with self._lock:
            if int(ms) > self._d.get(field, -1):
                self._d[field] = int(ms)
                return True
            return False

    def get(self, field: str) -> int | None:
        return self._d.get(field)
