"""Polling with deadlines instead of sleep-and-hope."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01, message: str = "condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")


def group_caught_up(r, stream: str, group: str) -> bool:
    """True once ``group`` has been handed every entry of ``stream`` and acknowledged them all."""
    last = r.xinfo_stream(stream)["last-generated-id"]
    for g in r.xinfo_groups(stream):
        if g["name"] in (group, group.encode()):
            return g["last-delivered-id"] == last and g["pending"] == 0
    return False


def leases_settled(r, role: str, streams: list[str], owners) -> dict | None:
    """``{stream: holder}`` once the replicas ``owners`` of an ordered role have settled: both are live
    members, every stream's lease is held, and nobody holds more than the fair share (so no hand-back,
    which leaves a stream without a holder until the receiver's next beat, is still to come). Else None."""
    from collections import Counter

    from chimera.streams import keys

    names = {n.encode() if isinstance(n, str) else n for n in owners}
    members = set(r.zrange(keys.members_key(role), 0, -1))
    if members != names:
        return None
    holders = {s: r.get(keys.lease_key(role, s)) for s in streams}
    share = -(-len(streams) // len(names))
    if None in holders.values() or set(holders.values()) != names or max(Counter(holders.values()).values()) > share:
        return None
    return {s: h.decode() for s, h in holders.items()}
