"""Account equity, margin and positions from the venue, and the ``account_snapshots`` documents.

Equity is the venue's own figure: USDT-M ``GET /fapi/v3/account`` ``totalMarginBalance`` (wallet
balance + unrealized PnL), read through the account's SDK client (``ctx.venues.get(account)``).
Snapshots: ``<account>:<day>:open`` once per UTC day (the breaker's opening equity), ``<account>:<day>:close``
rewritten by every sample (the day's last), and ``<account>:<bucket>`` once per
``snapshot_interval_ms`` bucket (a re-sample in the same bucket rewrites it: bounded, idempotent).
"""

from __future__ import annotations

from decimal import Decimal

from chimera.errors import RetryableError
from chimera.risk.breaker import day_start, trade_date
from chimera.schemas.documents.account_risk import AccountSnapshot, VenuePosition, from_doc, to_doc
from chimera.store.collections import ACCOUNT_SNAPSHOTS, POSITIONS

LIVE_STATES = ["PENDING_ENTRY", "ACTIVE", "PENDING_CLOSING"]


def _d(v) -> Decimal:
    return Decimal(str(v)) if v not in (None, "") else Decimal(0)


def read_account(venue, account_id: str, now_ms: int, kind: str = "INTERVAL") -> AccountSnapshot:
    """The account's futures equity, margin and positions as the venue reports them now."""
    try:
        raw = venue.fut.api.account_information_v3().data()
        data = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    except Exception as exc:  # the venue answered nothing usable: sample again on the next tick
        raise RetryableError(f"account {account_id}: reading equity from the venue failed: {exc}") from exc
    wallet, upnl = _d(data.get("totalWalletBalance")), _d(data.get("totalUnrealizedProfit"))
    equity = _d(data.get("totalMarginBalance")) if data.get("totalMarginBalance") not in (None, "") else wallet + upnl
    positions = tuple(
        VenuePosition(symbol=p.get("symbol", ""), side=p.get("positionSide") or "BOTH", amt=_d(p.get("positionAmt")),
                      entry_price=_d(p.get("entryPrice")), unrealized=_d(p.get("unrealizedProfit")))
        for p in data.get("positions") or () if _d(p.get("positionAmt")) != 0)
    return AccountSnapshot(account_id=account_id, kind=kind, trade_date=trade_date(now_ms), ts=now_ms, equity=equity,
                           wallet=wallet, unrealized=upnl, initial_margin=_d(data.get("totalInitialMargin")),
                           available=_d(data.get("availableBalance")), positions=positions)


def open_positions(store, account_id: str) -> list[dict]:
    """S6's live positions of the account (the positions collection is their one record)."""
    return [d for d in store.query(POSITIONS, {"state": ("in", LIVE_STATES)}, order_by="created_at")
            if (d.get("account_id") or "main") == account_id]


def opening(store, account_id: str, day: str) -> AccountSnapshot | None:
    return from_doc(store.get(ACCOUNT_SNAPSHOTS, f"{account_id}:{day}:open"), AccountSnapshot)


def record(store, snap: AccountSnapshot, interval_ms: int) -> AccountSnapshot:
    """Write the sample: the day's opening (once), its close (latest) and the interval bucket.

    Returns the day's opening snapshot (the one already stored, or this sample when it is the first).
    """
    from msgspec.structs import replace

    day = snap.trade_date
    first = replace(snap, kind="OPEN")
    if not store.insert_if_absent(ACCOUNT_SNAPSHOTS, f"{snap.account_id}:{day}:open", to_doc(first)):
        first = opening(store, snap.account_id, day) or first
    store.upsert(ACCOUNT_SNAPSHOTS, f"{snap.account_id}:{day}:close", to_doc(replace(snap, kind="CLOSE")))
    bucket = snap.ts - snap.ts % max(1, interval_ms)
    store.upsert(ACCOUNT_SNAPSHOTS, f"{snap.account_id}:{bucket}", to_doc(replace(snap, kind="INTERVAL")))
    return first


def query(store, account_id: str | None = None, trade_date_: str | None = None, kind: str | None = None,
          limit: int = 500) -> list[dict]:
    """Snapshots by account / trading day / kind, oldest first (the ops query: ``?trade_date=YYYY-MM-DD``)."""
    where: dict = {}
    if account_id:
        where["account_id"] = account_id
    if trade_date_:
        where["trade_date"] = trade_date_
    if kind:
        where["kind"] = kind
    return store.query(ACCOUNT_SNAPSHOTS, where, order_by="ts", limit=limit)




def breaker_states(store, account_id: str | None = None) -> list[dict]:
    """The breaker of every account (or one): level, trade_date, opening equity, drawdown, flattened."""
    from chimera.store.collections import ACCOUNT_RISK

    if account_id:
        doc = store.get(ACCOUNT_RISK, account_id)
        return [doc] if doc else []
    return store.query(ACCOUNT_RISK, None, order_by="account_id")


def breaker_events(store, account_id: str | None = None, trade_date_: str | None = None,
                   limit: int = 200) -> list[dict]:
    """The breaker's audit (TRIPPED_SOFT / TRIPPED_HARD / RESET), newest first."""
    from chimera.store.collections import ACCOUNT_RISK_EVENTS

    where: dict = {}
    if account_id:
        where["account_id"] = account_id
    if trade_date_:
        where["trade_date"] = trade_date_
    return store.query(ACCOUNT_RISK_EVENTS, where or None, order_by="at", desc=True, limit=limit)


__all__ = ["breaker_events", "breaker_states", "day_start", "open_positions", "opening", "query", "read_account",
           "record"]
