"""The books' identity as check rows, shared by the backtest report (``results.checks``) and the live
check of a running account (``chimera.ops.books``), so both print and judge it the same way.

A row is ``{"id", "check", "expected", "actual", "ok", "detail"?}``: ``expected`` is the venue's figure
(the truth), ``actual`` the one being checked against it. Money is compared to ``EPS`` (1e-8 USDT, the
venue's 8 decimals: a difference of 1e-8 is a difference, so the figures must be equal); trades by key,
one to one.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

ZERO = Decimal(0)
EPS = Decimal("0.00000001")


def money_row(cid: str, check: str, expected: Decimal, actual: Decimal, detail: str = "") -> dict:
    row = {"id": cid, "check": check, "expected": str(expected), "actual": str(actual),
           "ok": abs(expected - actual) < EPS}
    if detail:
        row["detail"] = detail
    return row


def one_to_one_row(cid: str, check: str, expected: Iterable[str], actual: Iterable[str]) -> dict:
    """Two lists of keys: equal as sorted lists (a key twice on one side is a difference too)."""
    want, have = sorted(expected), sorted(actual)
    return {"id": cid, "check": check, "expected": str(len(want)), "actual": str(len(have)), "ok": want == have,
            "detail": ", ".join(sorted(set(want) ^ set(have))[:10])}


def dec(v) -> Decimal:
    return Decimal(str(v or 0))


def positions_net(positions: Iterable[dict]) -> Decimal:
    """Σ realized PnL − Σ fees + Σ funding over store position documents."""
    return sum((dec(p.get("realized_pnl")) - dec(p.get("fees")) + dec(p.get("funding")) for p in positions), ZERO)
