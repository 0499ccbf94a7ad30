"""Workers' clocks follow the local venue's replay clock (``CHIMERA_CLOCK=follow``, ``replay:{clock}``).

Real venue server and real Redis (standalone and the cluster). Free-running at x600 the venue
publishes its replay time; a ``FollowClock`` reads market time, never the wall, and never goes
backwards. Paced, it is exactly the time at which the venue waits for the pipeline. Settings refuse
an unknown ``CHIMERA_CLOCK`` naming the fix.
"""

from __future__ import annotations

import json
import time

import pytest

from chimera.errors import FatalError
from chimera.ops.bootstrap import clock_from
from chimera.ops.settings import load_settings
from chimera.streams import keys
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from chimera.workers.clock import FollowClock, follow_redis
from tests.support.polling import wait_until

SAMPLE_START = 1751760000000  # the shipped sample's first bar (2025-07-06T00:00Z)


def test_a_follower_reads_the_venues_market_time_at_x600(redis_url, r, settings):
    venue = start_venue(VenueConfig(speed=600.0, clock_redis_url=redis_url))
    try:
        clock = follow_redis(r, keys.REPLAY_CLOCK, wait_s=10)
        seen = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            seen.append(clock.now_ms())
            time.sleep(0.01)
        venue_now = venue.control("/chimera/v1/clock")["time_ms"]
    finally:
        venue.stop()
    assert seen == sorted(seen), "the followed clock went backwards"
    # market time (from the first bar's open − 1 ms, where the venue starts), not the wall
    assert SAMPLE_START - 1 <= seen[0] < time.time() * 1000 - 86_400_000, seen[0]
    # Three wall seconds at x600 are about 30 market minutes; the follower moved with the venue.
    assert seen[-1] - seen[0] >= 10 * 60_000, (seen[0], seen[-1])
    assert abs(venue_now - seen[-1]) < 5 * 60_000, (venue_now, seen[-1])
    doc = json.loads(r.get(keys.REPLAY_CLOCK))
    assert doc["paced"] is False and doc["speed"] == 600.0


def test_paced_the_follower_is_exactly_where_the_venue_waits(redis_url, r):
    venue = start_venue(VenueConfig(speed=-1.0, pace_redis_url=redis_url, pace_timeout_s=600))
    try:
        # Nobody publishes the bars: the venue replays its first minute and waits there.
        held = wait_until(lambda: (c := venue.control("/chimera/v1/clock"))["processed"] and c["time_ms"] % 60_000
                          == 59_999 and c, timeout=30, message="the first minute replayed")
        clock = follow_redis(r, keys.REPLAY_CLOCK, wait_s=10)
        assert clock.now_ms() == held["time_ms"]
        time.sleep(0.5)  # a waiting venue: the followed time does not run on with the wall
        assert clock.now_ms() == held["time_ms"] == venue.control("/chimera/v1/clock")["time_ms"]
        assert json.loads(r.get(keys.REPLAY_CLOCK))["paced"] is True
    finally:
        venue.stop()


def test_clock_settings(redis_url, r, settings):
    with pytest.raises(FatalError, match="CHIMERA_CLOCK='venue'.*'follow'"):
        load_settings({"CHIMERA_CLOCK": "venue"})
    follow = load_settings({"CHIMERA_CLOCK": "follow:replay:{mine}", "CHIMERA_REDIS_URL": redis_url})
    # A key of one's own (follow:<key>): what the venue would publish there is what the clock reads.
    r.set("replay:{mine}", json.dumps({"time_ms": 123, "speed": 1, "paced": False, "done": False}))
    made = clock_from(follow)
    assert isinstance(made, FollowClock) and made.now_ms() == 123
