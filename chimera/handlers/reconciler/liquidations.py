"""S5: a store position flat at the venue may have been liquidated or auto-deleveraged (ADL).

Binance lists its own closing orders at ``GET /fapi/v1/forceOrders`` (``autoclose-...`` client id for a
liquidation, ``adl_autoclose`` for ADL; default window: the last 7 days of the venue's clock). Each force
order is booked once in ``liquidations`` (key ``<account>:<orderId>``, insert-if-absent), so two runs,
or two positions, never claim the same one. The newest unbooked force order that closed this side wins:
an old unbooked one (from before this check existed) is less likely to be this position's end.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.common import strategy_event
from chimera.handlers.reconciler.common import read
from chimera.schemas.documents.positions import Position
from chimera.store.collections import LIQUIDATIONS


def kind_of(order: dict) -> str:
    return "ADL" if order.get("clientOrderId") == "adl_autoclose" else "LIQUIDATED"


def _closes(order: dict, side: str) -> bool:
    closing = "SELL" if side == "BUY" else "BUY"
    return order.get("side") == closing and Decimal(str(order.get("executedQty") or 0)) > 0


def book_forced_close(run, fut, symbol: str, side: str, docs: list[Position], close) -> bool:
    """Close ``docs`` (all live ``symbol:side`` positions) as LIQUIDATED/ADL if a force order explains it."""
    ctx = run.ctx
    orders = sorted((o for o in read(fut.force_orders, symbol) if _closes(o, side)),
                    key=lambda o: (int(o.get("updateTime") or o.get("time") or 0), int(o["orderId"])), reverse=True)
    for order in orders:
        key = f"{run.account_id}:{order['orderId']}"
        if ctx.store.get(LIQUIDATIONS, key) is not None:
            continue
        kind = kind_of(order)
        booked = {"account_id": run.account_id, "order_id": str(order["orderId"]), "symbol": symbol,
                  "side": order["side"], "kind": kind, "client_order_id": order.get("clientOrderId"),
                  "qty": str(order.get("executedQty")), "avg_price": str(order.get("avgPrice")),
                  "venue_time": order.get("updateTime") or order.get("time"), "pos_ids": [d.pos_id for d in docs],
                  "run_id": run.run_id, "booked_at": ctx.now_ms()}
        if not ctx.store.insert_if_absent(LIQUIDATIONS, key, booked):
            continue  # another run booked it between our read and our write
        for doc in docs:
            if close(run, doc, kind, exit_price=str(order.get("avgPrice"))):
                item = {"type": "position", "ref": doc.pos_id, "symbol": symbol, "side": side, "action": kind,
                        "qty": str(doc.qty), "exit_price": booked["avg_price"], "force_order_id": booked["order_id"]}
                strategy_event(ctx, "RECONCILE_LIQUIDATION", f"{run.run_id}:{doc.pos_id}", item)
                run.alert("RECONCILE_LIQUIDATION",
                          f"{side} position {doc.pos_id} ({doc.qty} {symbol}) closed by the venue: {kind} "
                          f"at {booked['avg_price']} (force order {booked['order_id']})",
                          ref=doc.pos_id, symbol=symbol)
        return True
    return False
