"""Reads of the virtual books for the gateway (``GET /v1/positions?account_id=all``) and S5's report."""

from __future__ import annotations

from decimal import Decimal

from chimera.accounts import virtual as vp
from chimera.store.collections import VIRTUAL_BOOKS

ALL = "all"


def books(store, account_id: str | None = None, symbol: str | None = None) -> list[vp.VirtualBook]:
    where: dict = {}
    if account_id not in (None, "", ALL):
        where["account_id"] = account_id
    if symbol:
        where["symbol"] = symbol
    got = [vp.from_doc(d) for d in store.query(VIRTUAL_BOOKS, where or None)]
    return sorted((b for b in got if b is not None), key=lambda b: b.key)


def virtual_positions(store, account_id: str | None = None, *, symbol: str | None = None,
                      include_flat: bool = False) -> list[vp.VirtualPosition]:
    """Every strategy's virtual position (UNASSIGNED included) of one account, or of all accounts when
    ``account_id`` is None or ``"all"``; sorted by account, symbol, position side, strategy. Flat
    positions (qty 0, their realized PnL kept) only with ``include_flat``."""
    rows = [p for b in books(store, account_id, symbol) for p in b.positions if include_flat or p.qty]
    return sorted(rows, key=lambda p: (p.account_id, p.market, p.symbol, p.position_side, p.strategy))


def totals(store, account_id: str | None = None) -> dict[tuple[str, str, str], Decimal]:
    """Σ virtual qty per (account, symbol, position side): what the venue's quantity must equal."""
    out: dict[tuple[str, str, str], Decimal] = {}
    for b in books(store, account_id):
        for side in b.sides():
            out[(b.account_id, b.symbol, side)] = b.total(side)
    return out


def unassigned(store, account_id: str | None = None) -> list[dict]:
    """The UNASSIGNED quantities (non-zero), with the venue quantity the last reconcile read."""
    return [{"account_id": b.account_id, "symbol": b.symbol, "position_side": side, "qty": str(q),
             "venue_qty": str(b.venue_qty.get(side, "")), "reconciled_at": b.reconciled_at}
            for b in books(store, account_id) for side, q in sorted(vp.unassigned(b).items())]


def gaps(store, account_id: str, position_risk: list[dict]) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """Where the invariant does not hold for one account: ``(symbol, position side) -> (Σ virtual, venue)``,
    given the venue's ``positionRisk`` rows (drills and tests check it is empty once reports are in)."""
    venue: dict[tuple[str, str], Decimal] = {}
    for row in position_risk:
        key = (str(row["symbol"]), str(row.get("positionSide") or "BOTH"))
        venue[key] = venue.get(key, Decimal(0)) + Decimal(str(row.get("positionAmt") or 0))
    virtual = {(sym, side): q for (_, sym, side), q in totals(store, account_id).items()}
    return {k: (virtual.get(k, Decimal(0)), venue.get(k, Decimal(0))) for k in sorted(set(venue) | set(virtual))
            if virtual.get(k, Decimal(0)) != venue.get(k, Decimal(0))}
