"""Walk-forward splits in time (ms), purged and embargoed by the label horizon, not by a row count.

A training sample at t0 is labelled by what happens until t0 + horizon, so training samples whose
label window reaches into the test window are purged (train ends ``horizon`` before the test starts),
and the ``embargo`` after a test window keeps the next fold's training away from its labels' tail.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fold:
    n: int
    train_start: int
    train_end: int  # exclusive; already purged
    test_start: int
    test_end: int  # exclusive


def walk_forward(start: int, end: int, *, train_ms: int, test_ms: int, horizon_ms: int,
                 embargo_ms: int | None = None, step_ms: int | None = None) -> list[Fold]:
    """Rolling folds over [start, end): train [t, t+train) purged by ``horizon_ms``, then test
    [t+train, t+train+test); the next fold starts ``step_ms`` (default ``test_ms``) later, and its test
    window starts at least ``embargo_ms`` (default ``horizon_ms``) after the previous test ended."""
    if min(train_ms, test_ms) <= 0 or horizon_ms < 0:
        raise ValueError("train_ms and test_ms must be > 0 and horizon_ms >= 0")
    if train_ms <= horizon_ms:
        raise ValueError(f"train_ms {train_ms} must exceed the horizon {horizon_ms}: nothing would be left to train on")
    step = step_ms or test_ms
    embargo = horizon_ms if embargo_ms is None else embargo_ms
    folds: list[Fold] = []
    t = start
    last_test_end = None
    while t + train_ms + test_ms <= end:
        test_start = t + train_ms
        if last_test_end is not None and test_start < last_test_end + embargo:
            t = last_test_end + embargo - train_ms
            continue
        folds.append(Fold(len(folds), t, test_start - horizon_ms, test_start, test_start + test_ms))
        last_test_end = test_start + test_ms
        t += step
    return folds
