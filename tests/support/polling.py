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
