"""Helpers both reconciler passes share: venue reads with a retry, ownership, audit documents, in-flight."""

from __future__ import annotations

import time

from chimera.schemas.states import OrderStatus
from chimera.venues.binance.adapter import VenueRateLimited, VenueUnknown

S = OrderStatus
UNSETTLED = {S.INITIALIZED, S.SUBMITTED, S.UNKNOWN, S.PENDING_CANCEL}  # S4 is mid-request on these
READ_ATTEMPTS = 3


def read(fn, *args):
    """A venue read with a short retry: repeating a GET is harmless, a 5xx should not fail the run."""
    for attempt in range(READ_ATTEMPTS - 1):
        try:
            return fn(*args)
        except (VenueUnknown, VenueRateLimited):
            time.sleep(0.05 * (attempt + 1))
    return fn(*args)


def mine(doc: dict, account_id: str) -> bool:
    # Documents written before accounts existed (or by single-account roles) belong to main.
    return doc.get("account_id", "main") == account_id


def in_flight(doc: dict, now_ms: int, settle_ms: int, stuck_ms: int) -> bool:
    """S4 may still be resolving the leg, or S3/S6 may not have applied its latest change yet."""
    age = now_ms - int(doc.get("updated_at") or 0)
    return age < (stuck_ms if S(doc["status"]) in UNSETTLED else settle_ms)
