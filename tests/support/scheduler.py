"""The scheduler role (due timers -> streams) in a thread of the test, for tests whose workers arm timers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from chimera.workers.clock import WallClock
from chimera.workers.scheduler_role import run_scheduler


@contextlib.contextmanager
def scheduler_thread(r, name: str = "sched-test") -> Iterator[threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=run_scheduler, args=(r, WallClock(), name, stop), daemon=True)
    t.start()
    try:
        yield t
    finally:
        stop.set()
        t.join(5)
