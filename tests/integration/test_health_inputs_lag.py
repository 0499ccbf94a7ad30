"""S5 defers while S6 has a backlog (``group_backlog``): a group whose lag Redis cannot count (XINFO's
NULL lag: a group started at an arbitrary id, entries trimmed or deleted past it, a failover) is behind
unless it has read the newest entry; it was read as caught up, and S5 adopted positions S6 was about to
open (CI run 12, the cluster drill losing a master)."""

from __future__ import annotations

from chimera.ports.health_inputs import RedisHealthInputs

STREAM = "t:{lagnull}:stream"


def test_an_uncountable_lag_is_a_backlog_until_the_group_read_the_newest_entry(r):
    ids = [r.xadd(STREAM, {"n": str(i)}) for i in range(3)]
    r.xgroup_create(STREAM, "g", id=ids[1])  # started mid-stream: Redis cannot count what it has read
    info = {(g["name"].decode() if isinstance(g["name"], bytes) else g["name"]): g for g in r.xinfo_groups(STREAM)}
    assert info["g"]["lag"] is None  # the case under test, as this Redis reports it
    port = RedisHealthInputs(r, streams=(STREAM,))
    assert port.group_backlog(STREAM, "g") == 1
    assert port.stream_lag()[STREAM] == 1
    r.xreadgroup("g", "c", {STREAM: ">"})  # delivered, not acked: pending
    assert port.group_backlog(STREAM, "g") == 1
    r.xack(STREAM, "g", ids[2])
    assert port.group_backlog(STREAM, "g") == 0
