"""The one reconnect policy of S1's streams (market data and user data, at start and after a drop):
capped exponential backoff, and which failures are not worth retrying."""

from __future__ import annotations

FIRST_S = 0.5
CAP_S = 30.0


class Backoff:
    """0.5 s, 1 s, 2 s ... capped at 30 s; ``reset()`` after a success."""

    def __init__(self, first_s: float = FIRST_S, cap_s: float = CAP_S) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.delay_s = first_s

    def next(self) -> float:
        delay, self.delay_s = self.delay_s, min(self.delay_s * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self.delay_s = self.first_s


def is_auth_error(exc: BaseException) -> bool:
    """A rejected API key (HTTP 401 / 403): retrying cannot help, the operator has to fix the key."""
    from binance_common.errors import ForbiddenError, UnauthorizedError

    return isinstance(exc, UnauthorizedError | ForbiddenError) or getattr(exc, "status_code", None) in (401, 403)
