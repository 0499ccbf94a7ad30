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
