"""A process that takes a lock, reports its fence, then (when told) tries its late write."""

from __future__ import annotations

import sys
import time

from chimera.ops.settings import load_settings
from chimera.store import open_store
from chimera.streams.redis import connect
from chimera.workers.locks import Lock


def main() -> None:
    lock_name, ttl_ms = sys.argv[1], int(sys.argv[2])
    settings = load_settings()
    r = connect(settings.redis_url, settings.redis_cluster)
    store = open_store(settings.store_url)
    lock = Lock(r, lock_name, ttl_ms, owner="holder")
    assert lock.acquire(wait_ms=5000)
    r.set("t:holder:fence", lock.fence)
    while not r.get("t:holder:go"):
        time.sleep(0.01)
    ok = store.put_fenced("positions", "p1", {"writer": "holder", "fence": lock.fence}, lock.fence)
    r.set("t:holder:result", b"written" if ok else b"refused")


if __name__ == "__main__":
    main()
