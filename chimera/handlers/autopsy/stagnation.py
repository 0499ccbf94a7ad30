"""When a position stagnates: |ROE| inside ``band`` for at least ``min_ms`` (bundle ``autopsy.stagnation_band``
and ``autopsy.stagnation_ms``). Pure, so S6 can call it from its management pass with the position's
recent ROE samples and publish ``PositionChanged(kind="STAGNATED")`` when it turns True (once per position).
"""

from __future__ import annotations

from collections.abc import Sequence


def stagnated(samples: Sequence[tuple[int, float]], band: float, min_ms: int) -> bool:
    """``samples``: (clock ms, ROE) in time order. True when every sample of the last ``min_ms`` (and at
    least one sample that old) has |ROE| <= band."""
    if not samples or min_ms <= 0:
        return False
    end = samples[-1][0]
    start = None
    for t, roe in reversed(samples):
        if abs(roe) > band:
            break
        start = t
    return start is not None and end - start >= min_ms


def running(since: int, t: int, roe: float, band: float, min_ms: int) -> tuple[int, bool]:
    """``stagnated`` for a worker that keeps no samples (S6 keeps one number on the position): ``since`` is when
    the current run of in-band samples began (0: the last sample was outside). Returns the new ``since`` and
    whether the rule holds at ``t``: the same answer ``stagnated`` gives over every sample seen so far."""
    since = (since or t) if abs(roe) <= band else 0
    return since, bool(since) and min_ms > 0 and t - since >= min_ms
