"""Paced replay: at speed max the venue replays one market minute, then waits until S1 has published
that minute's bars and the pipeline's consumer groups hold nothing pending (real Redis and cluster)."""

from __future__ import annotations

import time
from decimal import Decimal

from chimera.schemas.messages import Kline
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from chimera.workers.clock import WallClock

STEP = 60_000


def _poll(fn, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _publish_bar(r, symbol: str, open_ms: int) -> None:
    k = Kline(market="perp", symbol=symbol, interval="1m", open_time=open_ms, close_time=open_ms + STEP - 1,
              open=Decimal(1), high=Decimal(1), low=Decimal(1), close=Decimal(1), volume=Decimal(1))
    Producer(r, WallClock()).publish(keys.mkt_stream("perp", symbol), k, f"kline:perp:{symbol}:1m:{open_ms}",
                                     event_time=k.close_time)


def test_venue_waits_for_the_pipeline_between_minutes(redis_url, r, tmp_path):
    stream = keys.mkt_stream("perp", "BTCUSDT")
    r.xgroup_create(stream, "cg:s2", id="0", mkstream=True)
    venue = start_venue(VenueConfig(speed=-1.0, pace_redis_url=redis_url, pace_timeout_s=60,
                                    state_file=str(tmp_path / "state.json")))
    try:
        # Minute 1 is replayed (up to its bars' last millisecond), then the venue holds: no bar of it
        # is on the streams yet.
        clock = _poll(lambda: (c := venue.control("/chimera/v1/clock"))["processed"] and c["time_ms"] % STEP == STEP - 1
                      and c, "minute 1 replayed")
        first_step_end = clock["time_ms"] + 1
        time.sleep(1.0)
        clock = venue.control("/chimera/v1/clock")
        assert clock["time_ms"] == first_step_end - 1 and clock["pace"]["steps"] == 0

        # S1 publishes both bars; S2 has read BTC's but not acked it: still held.
        for sym in ("BTCUSDT", "ETHUSDT"):
            _publish_bar(r, sym, first_step_end - STEP)
        read = r.xreadgroup("cg:s2", "c1", {stream: ">"}, count=10)
        ids = [eid for _, entries in read for eid, _ in entries]
        assert len(ids) == 1
        time.sleep(1.0)
        assert venue.control("/chimera/v1/clock")["time_ms"] == first_step_end - 1

        # Acked: the pipeline is drained, the venue replays minute 2 and holds again.
        r.xack(stream, "cg:s2", *ids)
        _poll(lambda: venue.control("/chimera/v1/clock")["time_ms"] == first_step_end + STEP - 1, "minute 2 replayed")
        time.sleep(1.0)
        clock = venue.control("/chimera/v1/clock")
        assert clock["time_ms"] == first_step_end + STEP - 1
        assert clock["pace"]["steps"] == 1 and clock["pace"]["timeouts"] == 0
    finally:
        venue.stop()
