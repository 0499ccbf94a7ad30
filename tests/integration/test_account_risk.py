"""Account risk (issue #16 item 5) on real Redis (single and the 6-node cluster) and the local venue
through the official Binance SDK: execution traces, the daily drawdown breaker (soft refuses entries,
hard flattens at the venue, the next UTC day resets), max open positions per account, priority replace
closing the older position at the venue before the new entry, PROCESSING_LAG alerts."""

from __future__ import annotations

from chimera.schemas.messages import Noop
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers import traces
from chimera.workers.clock import WallClock
from tests.support import handlers
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

EFFECT_GROUP = keys.group("t-effect")


def test_execution_traces_record_start_done_and_error_per_key(r, settings):
    producer = Producer(r, WallClock())
    producer.publish("t:in", Noop(n=1), idempotency_key="tr-good")
    producer.publish("t:in", Noop(n=2, data="boom"), idempotency_key="tr-bad")
    with ThreadWorker(handlers.EFFECT_SPEC, r, settings, "w-trace") as w:
        wait_until(lambda: w.store.get("effects", "tr-good"), timeout=20, message="good entry handled")
        wait_until(lambda: any(t["phase"] == "ERROR" and t["outcome"] == "dead"
                               for t in traces.query(r, "tr-bad", now_ms=WallClock().now_ms(),
                                                     group_names=[EFFECT_GROUP])),
                   timeout=30, message="bad entry traced as dead")
    now = WallClock().now_ms()
    good = traces.query(r, "tr-good", now_ms=now, group_names=[EFFECT_GROUP])
    assert [t["phase"] for t in good] == ["START", "DONE"]
    start, done = good
    assert start["stream"] == "t:in" and start["type"] == "noop" and start["consumer"] == "w-trace"
    assert start["entry_id"] == r.xrange("t:in")[0][0].decode()  # the stream entry it handled
    assert done["outputs"] == 1 and done["t"] >= start["t"]
    bad = traces.query(r, "tr-bad", now_ms=now, group_names=[EFFECT_GROUP])
    assert [t["phase"] for t in bad] == ["START", "ERROR"]
    assert "boom on 2" in bad[1]["reason"] and bad[1]["outcome"] == "dead"
    assert traces.query(r, "never-sent", now_ms=now, group_names=[EFFECT_GROUP]) == []
    # The trace hash expires as a whole (operator history, not an archive).
    name = keys.exec_trace(EFFECT_GROUP, start["t"] // traces.HOUR_MS)
    assert 0 < r.pttl(name) <= traces.TRACE_TTL_MS
