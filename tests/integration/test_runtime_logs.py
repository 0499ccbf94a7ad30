"""A line a handler logs carries the entry's correlation and causation ids (ARCHITECTURE §9)."""

from __future__ import annotations

import json

import pytest
from loguru import logger

from chimera.schemas.envelope import Envelope, encode
from chimera.schemas.messages import Noop
from chimera.store import open_store
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.inprocess import InProcessRuntime
from tests.support import handlers
from tests.support.polling import group_caught_up, wait_until
from tests.support.workers import ThreadWorker


@pytest.fixture
def lines():
    """The JSON lines (loguru's serialize=True, as production logs) handlers write during the test."""
    captured: list[dict] = []
    sink = logger.add(lambda m: captured.append(json.loads(m)["record"]), serialize=True, level="INFO")
    yield captured
    logger.remove(sink)


def _handled(lines, key):
    return [line for line in lines if line["message"] == f"handled {key}"]


def test_redis_handler_log_line_carries_the_entry_ids(r, settings, lines):
    env = Envelope(type="noop", idempotency_key="log-1", correlation_id="corr-9", causation_id="cause-3",
                   payload=Noop(n=1))
    entry_id = r.xadd("t:log", encode(env)).decode()
    with ThreadWorker(handlers.LOG_SPEC, r, settings, "lg1"):
        wait_until(lambda: r.exists("t:log") and group_caught_up(r, "t:log", keys.group("t-log")), timeout=20,
                   message="entry handled")
    [line] = _handled(lines, "log-1")
    extra = line["extra"]
    assert (extra["correlation_id"], extra["causation_id"]) == ("corr-9", "cause-3")
    assert (extra["role"], extra["entry_id"], extra["stream"]) == ("t-log", entry_id, "t:log")
    # Outside a handler the ids are gone again (the worker's own lines do not inherit them).
    assert all("correlation_id" not in x["extra"] for x in lines if x["message"].startswith("worker lg1"))


def test_inprocess_handler_log_line_carries_the_entry_ids(lines):
    rt = InProcessRuntime([handlers.LOG_SPEC], store=open_store("sqlite://:memory:"), clock=ManualClock(1000))
    rt.publish("t:log", Noop(n=2), idempotency_key="log-2")
    rt.run()
    [line] = _handled(lines, "log-2")
    # A first message is its own correlation root and has no cause.
    assert (line["extra"]["correlation_id"], line["extra"]["causation_id"]) == ("log-2", "")
    assert line["extra"]["role"] == "t-log"
