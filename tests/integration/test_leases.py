"""Lease local deadlines: a stalled owner stops handling a stream before another replica can take it."""

from __future__ import annotations

from chimera.streams import keys
from chimera.workers.leases import SAFE_FRACTION, LeaseManager

STREAMS = ["t:lease:a"]
TTL_MS = 1000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_an_owner_stalled_past_its_local_deadline_gives_the_stream_up_then_wins_it_back(r):
    clock = Clock()
    mine = LeaseManager(r, "t-lease", "me", STREAMS, TTL_MS, monotonic=clock)
    assert mine.heartbeat() == {"t:lease:a"}
    assert mine.take_new() == {"t:lease:a"}
    clock.t += TTL_MS * SAFE_FRACTION / 1000 - 0.05
    assert mine.still_owns("t:lease:a")
    clock.t += 0.1  # stalled past the local deadline while the key may still be ours in Redis
    assert not mine.still_owns("t:lease:a")
    assert r.get(keys.lease_key("t-lease", "t:lease:a")) == b"me"
    # Nobody took it: the next beat wins it back as a new acquisition (so our pending entries are claimed).
    assert mine.heartbeat() == {"t:lease:a"}
    assert mine.take_new() == {"t:lease:a"}
    assert mine.still_owns("t:lease:a")


def test_a_stream_taken_by_another_replica_is_not_won_back(r):
    clock = Clock()
    mine = LeaseManager(r, "t-lease", "me", STREAMS, TTL_MS, monotonic=clock)
    mine.heartbeat()
    assert mine.take_new() == {"t:lease:a"}
    clock.t += TTL_MS / 1000
    assert not mine.still_owns("t:lease:a")
    r.delete(keys.lease_key("t-lease", "t:lease:a"))  # our key ran out in Redis ...
    other = LeaseManager(r, "t-lease", "other", STREAMS, TTL_MS, monotonic=clock)
    assert other.heartbeat() == {"t:lease:a"}  # ... and another replica took it
    assert mine.heartbeat() == set()
    assert mine.take_new() == set()
    assert not mine.still_owns("t:lease:a")
