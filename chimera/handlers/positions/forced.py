"""The venue closed a position itself: liquidation or auto-deleveraging (ADL). Used by S6 (an exit the
venue refused because the position was already gone) and by S5 (a store position flat at the venue).

Binance lists its own closing orders at ``GET /fapi/v1/forceOrders`` (``autoclose-...`` client id for a
liquidation, ``adl_autoclose`` for ADL). Each force order is claimed once in ``liquidations`` (key
``<account>:<orderId>``, insert-if-absent), so two runs, two positions or S5 and S6 never book the same
one twice. The newest unclaimed force order that closed this side wins. Its trades are booked as
``fills`` (key ``FUT:<symbol>:<trade id>``, like S4's) with the venue's realized PnL and fee, and the
sums go onto the position when it is closed (complete accounting, issue 12 item 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from loguru import logger

from chimera.schemas.documents.positions import Position
from chimera.store.collections import FILLS, LIQUIDATIONS
from chimera.venues.binance.adapter import VenueError
from chimera.workers.handler import Context

ZERO = Decimal(0)


@dataclass(frozen=True)
class ForcedClose:
    kind: str  # LIQUIDATED | ADL
    order_id: str
    client_order_id: str
    avg_price: Decimal
    qty: Decimal
    realized_pnl: Decimal  # the venue's, summed over the force order's trades
    fee: Decimal
    doc: dict  # what was stored in ``liquidations``


def kind_of(order: dict) -> str:
    return "ADL" if order.get("clientOrderId") == "adl_autoclose" else "LIQUIDATED"


def _closes(order: dict, side: str) -> bool:
    closing = "SELL" if side == "BUY" else "BUY"
    return order.get("side") == closing and Decimal(str(order.get("executedQty") or 0)) > 0


def claim(ctx: Context, fut, symbol: str, side: str, positions: list[Position], *, account_id: str,
          claimed_by: str, orders: list[dict] | None = None) -> ForcedClose | None:
    """Claim the newest unclaimed force order that closed ``side`` on ``symbol`` and book its fills."""
    if orders is None:
        orders = fut.force_orders(symbol)
    for order in sorted((o for o in orders if _closes(o, side)),
                        key=lambda o: (int(o.get("updateTime") or o.get("time") or 0), int(o["orderId"])),
                        reverse=True):
        key = f"{account_id}:{order['orderId']}"
        held = ctx.store.get(LIQUIDATIONS, key)
        if held is not None:
            if positions and sorted(held.get("pos_ids") or []) == sorted(p.pos_id for p in positions) \
                    and "realized_pnl" in held:
                return _from_doc(held)  # our own claim, met again by a retried delivery
            continue
        kind = kind_of(order)
        doc = {"account_id": account_id, "order_id": str(order["orderId"]), "symbol": symbol, "side": order["side"],
               "kind": kind, "client_order_id": order.get("clientOrderId"), "qty": str(order.get("executedQty")),
               "avg_price": str(order.get("avgPrice")), "venue_time": order.get("updateTime") or order.get("time"),
               "pos_ids": [p.pos_id for p in positions], "run_id": claimed_by, "booked_at": ctx.now_ms()}
        if not ctx.store.insert_if_absent(LIQUIDATIONS, key, doc):
            continue  # claimed by someone else between our read and our write
        pnl, fee = _book_fills(ctx, fut, order, kind, positions, account_id)
        ctx.store.update_if(LIQUIDATIONS, key, {"realized_pnl": str(pnl), "fee": str(fee)}, {})
        return ForcedClose(kind=kind, order_id=str(order["orderId"]), client_order_id=order.get("clientOrderId") or "",
                           avg_price=Decimal(str(order.get("avgPrice"))), qty=Decimal(str(order.get("executedQty"))),
                           realized_pnl=pnl, fee=fee, doc={**doc, "realized_pnl": str(pnl), "fee": str(fee)})
    return None


def _from_doc(doc: dict) -> ForcedClose:
    return ForcedClose(kind=doc["kind"], order_id=doc["order_id"], client_order_id=doc.get("client_order_id") or "",
                       avg_price=Decimal(doc["avg_price"]), qty=Decimal(doc["qty"]),
                       realized_pnl=Decimal(doc["realized_pnl"]), fee=Decimal(doc["fee"]), doc=doc)


def is_force_order(client_order_id: str) -> bool:
    """Binance's own closing orders: ``autoclose-<ts>`` (liquidation) and ``adl_autoclose``."""
    return client_order_id.startswith("autoclose-") or client_order_id == "adl_autoclose"


def _book_fills(ctx: Context, fut, order: dict, kind: str, positions: list[Position],
                account_id: str) -> tuple[Decimal, Decimal]:
    """The force order's trades as ``fills`` (once per trade id); returns the venue's PnL and fee sums."""
    symbol = order["symbol"]
    try:
        trades = fut.trades(symbol, str(order["orderId"]))
    except VenueError as exc:  # the claim stands; S5's next run cannot re-claim, so say it loudly
        logger.error("force order {} on {}: trades unavailable ({}); its fills are not booked", order["orderId"],
                     symbol, exc)
        return ZERO, ZERO
    pnl = fee = ZERO
    pos_id = positions[0].pos_id if len(positions) == 1 else ""
    for t in trades:
        p, f = Decimal(str(t.get("realizedPnl") or 0)), Decimal(str(t.get("commission") or 0))
        pnl, fee = pnl + p, fee + f
        ctx.store.insert_if_absent(FILLS, f"FUT:{symbol}:{t['id']}", {
            "trade_id": str(t["id"]), "intent_id": f"force:{account_id}:{order['orderId']}", "leg": "force",
            "client_order_id": order.get("clientOrderId") or "", "symbol": symbol, "side": t.get("side") or order["side"],
            "qty": str(t["qty"]), "price": str(t["price"]), "fee": str(f), "fee_asset": t.get("commissionAsset", "USDT"),
            "is_maker": bool(t.get("maker", False)), "purpose": kind, "pos_id": pos_id, "realized_pnl": str(p),
            "market": "FUT", "account_id": account_id, "ts": int(t.get("time") or 0)})
    return pnl, fee
