"""The scheduler role: exactly one active instance moves due entries onto their streams."""

from __future__ import annotations

import threading

from loguru import logger

from chimera.streams import keys
from chimera.workers import scheduler
from chimera.workers.leases import SingletonLease

SPEC = None  # not a stream consumer; ``run_scheduler`` is its loop


def run_scheduler(r, clock, owner: str, stop: threading.Event, ttl_ms: int = 5000, tick_s: float = 0.02) -> None:
    lease = SingletonLease(r, keys.SCHED_LEASE, owner, ttl_ms)
    was_active = False
    try:
        while not stop.is_set():
            try:
                active = lease.tick()
                if active != was_active:
                    logger.info("scheduler {} is {}", owner, "active" if active else "standby")
                    was_active = active
                if active:
                    scheduler.fire_due(r, clock.now_ms())
            except Exception as exc:  # noqa: BLE001 - one bad tick must not end every timer of the system
                # e.g. redis-py's cluster client between a connection error and its slot-map refresh has
                # no default node (AttributeError, not a ConnectionError): the next tick tries again. A
                # thread that died here stopped every timer for good (a rollout stalled in CI).
                logger.warning("scheduler {}: tick failed ({!r}); retrying", owner, exc)
                stop.wait(0.2)
                continue
            stop.wait(tick_s if active else ttl_ms / 3000)
    finally:
        lease.release()
