"""The account-risk role's documents: the daily drawdown breaker, its audit, equity snapshots.

``account_risk/<account_id>`` (``BreakerDoc``): the breaker's state for the account's current UTC
trading day. ``account_risk_events/<account>:<day>:<kind>`` (``BreakerEvent``): one audit document
per trip and reset, append-only. ``account_snapshots/<account>:<day>:open`` (the day's opening
equity, written once), ``<account>:<day>:close`` (the day's latest sample) and
``<account>:<bucket ms>`` (one per ``snapshot_interval_ms``) (``AccountSnapshot``).

Evolution (msgspec rules): new fields get defaults; a field's type never changes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from chimera.schemas.documents.orders import from_doc, to_doc  # the same plain-JSON rules

BreakerLevel = Literal["OK", "SOFT", "HARD"]
SnapshotKind = Literal["OPEN", "CLOSE", "INTERVAL"]


class _Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    pass


class VenuePosition(_Doc, frozen=True):
    symbol: str
    side: str  # BOTH / LONG / SHORT (the venue's positionSide)
    amt: Decimal
    entry_price: Decimal = Decimal(0)
    unrealized: Decimal = Decimal(0)


class AccountSnapshot(_Doc, frozen=True):
    account_id: str
    kind: SnapshotKind
    trade_date: str  # YYYY-MM-DD (UTC, by ctx.clock)
    ts: int
    equity: Decimal  # wallet + unrealized (the venue's totalMarginBalance)
    wallet: Decimal
    unrealized: Decimal
    initial_margin: Decimal
    available: Decimal
    positions: tuple[VenuePosition, ...] = ()
    open_positions: int = 0  # S6's live positions of the account (positions collection)


class BreakerDoc(_Doc, frozen=True):
    account_id: str
    trade_date: str
    level: BreakerLevel = "OK"
    opening_equity: Decimal | None = None
    equity: Decimal | None = None
    drawdown_usdt: Decimal = Decimal(0)
    drawdown_pct: Decimal = Decimal(0)
    soft_at: int = 0
    hard_at: int = 0
    flattened: tuple[str, ...] = ()  # pos_ids a HARD trip sent FLATTEN for (one intent each per day)
    sampled_at: int = 0
    version: int = 0


class BreakerEvent(_Doc, frozen=True):
    """An audit record: ``kind`` TRIPPED_SOFT / TRIPPED_HARD / RESET."""

    account_id: str
    kind: str
    trade_date: str
    at: int
    previous: BreakerLevel
    level: BreakerLevel
    opening_equity: Decimal | None = None
    equity: Decimal | None = None
    drawdown_usdt: Decimal = Decimal(0)
    drawdown_pct: Decimal = Decimal(0)
    threshold: str = ""
    flattened: tuple[str, ...] = ()


__all__ = ["AccountSnapshot", "BreakerDoc", "BreakerEvent", "VenuePosition", "from_doc", "to_doc"]
