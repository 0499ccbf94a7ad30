"""Notifier: a receiver that never answers is retried with backoff then dead-lettered after N
attempts; an unconfigured channel is dead at once; both leave a DEAD document with the reason."""

from __future__ import annotations

import threading

from chimera.handlers.notifier.role import SPEC
from chimera.schemas.envelope import decode
from chimera.schemas.observability import Notify
from chimera.store import open_store
from chimera.store.collections import NOTIFICATIONS
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.scheduler_role import run_scheduler
from tests.support.polling import wait_until
from tests.support.redis_servers import free_port
from tests.support.workers import ThreadWorker


def test_dead_after_max_attempts_and_unknown_channel(r, settings):
    store = open_store(settings.store_url)
    nobody = free_port()  # nothing listens there: every send fails with "no answer"
    activate(store, "notify-dead", 1, {"notifier": {
        "channels": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{nobody}/hook"}},
        "retry": {"max_attempts": 3, "base_ms": 100, "max_ms": 1000, "timeout_s": 1}}})
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(r, WallClock(), "sched-dead", stop), daemon=True)
    sched.start()
    prod = Producer(r, WallClock())
    try:
        with ThreadWorker(SPEC, r, settings, "notifier-dead", store=store):
            prod.publish(keys.NOTIFY_OUTBOX, Notify(event_id="e1", channel="hook", text="x"), idempotency_key="n1")
            prod.publish(keys.NOTIFY_OUTBOX, Notify(event_id="e2", channel="pager", text="y"), idempotency_key="n2")
            doc = wait_until(lambda: (store.get(NOTIFICATIONS, "e1:hook") or {}).get("state") == "DEAD"
                             and store.get(NOTIFICATIONS, "e1:hook"), 20, message="e1 DEAD")
            other = wait_until(lambda: (store.get(NOTIFICATIONS, "e2:pager") or {}).get("state") == "DEAD"
                               and store.get(NOTIFICATIONS, "e2:pager"), 10, message="e2 DEAD")
            # e1's letter goes out after its DEAD document (the handler's emit, flushed with the ack): wait
            # for both letters, not the first one (CI run 29 read e2's alone).
            letters = wait_until(lambda: _both_dead(r), 10, message="both dead letters")
    finally:
        stop.set()
        sched.join(5)
    assert doc["attempts"] == 3 and [a["outcome"] for a in doc["log"]] == ["failed"] * 3
    assert "3 attempts" in doc["dead_reason"] and "no answer" in doc["dead_reason"]
    starts = [a["started_at"] for a in doc["log"]]
    assert all(b - a >= 50 for a, b in zip(starts, starts[1:], strict=False)), starts  # backoff, not a hot loop
    assert other["attempts"] == 0 and "not configured" in other["dead_reason"]
    reasons = " | ".join(d.reason for d in letters)
    assert "e1:hook dead" in reasons and "e2:pager dead" in reasons


def _both_dead(r) -> list | None:
    letters = [decode(f).payload for _i, f in r.xrange(keys.DEAD_LETTER)]
    return letters if sum(" dead" in d.reason for d in letters) >= 2 else None
