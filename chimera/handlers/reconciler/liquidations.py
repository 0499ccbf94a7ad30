"""S5: a store position flat at the venue may have been liquidated or auto-deleveraged (ADL).

The force order is found, claimed once and its trades booked as fills by S6's ``positions.forced``
(shared with S6, which meets the same situation when the venue refuses its exit); here the positions
it explains are closed as LIQUIDATED / ADL at its average price, with the venue's realized PnL and fee,
an audit record and an ERROR alert.
"""

from __future__ import annotations

from chimera.handlers.common import strategy_event
from chimera.handlers.positions import forced
from chimera.handlers.reconciler.common import read
from chimera.schemas.documents.positions import Position


def book_forced_close(run, fut, symbol: str, side: str, docs: list[Position], close) -> bool:
    """Close ``docs`` (all live ``symbol:side`` positions) as LIQUIDATED/ADL if a force order explains it."""
    got = forced.claim(run.ctx, fut, symbol, side, docs, account_id=run.account_id, claimed_by=run.run_id,
                       orders=read(fut.force_orders, symbol))
    if got is None:
        return False
    share = len(docs) or 1
    for doc in docs:
        if close(run, doc, got.kind, exit_price=str(got.avg_price), realized_pnl=got.realized_pnl / share,
                 fee=got.fee / share):
            item = {"type": "position", "ref": doc.pos_id, "symbol": symbol, "side": side, "action": got.kind,
                    "qty": str(doc.qty), "exit_price": str(got.avg_price), "force_order_id": got.order_id,
                    "realized_pnl": str(got.realized_pnl / share), "fee": str(got.fee / share)}
            strategy_event(run.ctx, "RECONCILE_LIQUIDATION", f"{run.run_id}:{doc.pos_id}", item)
            run.alert("RECONCILE_LIQUIDATION",
                      f"{side} position {doc.pos_id} ({doc.qty} {symbol}) closed by the venue: {got.kind} "
                      f"at {got.avg_price} (force order {got.order_id}, realized {got.realized_pnl})",
                      ref=doc.pos_id, symbol=symbol)
    return True
