"""Binance user data (USDT-M futures and spot) through the official SDKs: the SDK frame → plain dict
decoding and the pure normalizers used by S1 (``chimera/feeds/user_data.py``); the REST
side (listenKeys, catch-up reads) is in ``user_rest.py``.

* ``ORDER_TRADE_UPDATE`` (futures) / ``executionReport`` (spot) → ``VenueReport`` (market FUT / SPOT),
  with a de-duplication member per (order id, trade id) for TRADE executions and per
  (order id, exec type, status) otherwise; ``trade_report`` / ``new_report`` build the same reports
  from REST rows (the catch-up after a disconnection).
* ``ACCOUNT_UPDATE`` reason ``FUNDING_FEE`` → the event only says *that* funding settled (the
  balance-change field is not reliable for the fee), so the amounts are read from the income history
  (``funding_income``, ``incomeType=FUNDING_FEE``), one ``funding_records`` document per ``tranId``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from chimera.schemas.messages import VenueReport


def D(x: Any) -> Decimal:
    return Decimal(str(x)) if x not in (None, "") else Decimal(0)


def frame_to_dict(msg: Any) -> dict:
    """The SDK hands a oneOf model whose ``e`` discriminator was consumed: recover it from the model name."""
    if isinstance(msg, dict):
        return msg
    inst = getattr(msg, "actual_instance", None)
    if isinstance(inst, dict):  # an event the SDK has no model for: its raw payload
        return inst
    if inst is not None:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(inst).__name__).upper()
        d = inst.to_dict()
        d.setdefault("e", name)
        return d
    if hasattr(msg, "to_dict"):
        return msg.to_dict()
    return json.loads(str(msg))


def normalize_order_update(d: dict) -> VenueReport:
    """One ORDER_TRADE_UPDATE frame (``{"e", "E", "T", "o": {...}}``) → VenueReport (Decimal fields)."""
    o = d.get("o") or {}
    return VenueReport(
        market="FUT", symbol=o["s"], client_order_id=o.get("c") or "", venue_order_id=str(o.get("i", "")),
        side=o["S"], order_type=o.get("o") or "", exec_type=o.get("x") or "", order_status=o.get("X") or "",
        qty=D(o.get("q")), price=D(o.get("p")), cum_qty=D(o.get("z")), last_qty=D(o.get("l")),
        last_price=D(o.get("L")), commission=D(o.get("n")), commission_asset=o.get("N") or "",
        trade_id=int(o.get("t") or 0), realized_pnl=D(o.get("rp")), reduce_only=bool(o.get("R")),
        is_maker=bool(o.get("m")), ts=int(o.get("T") or d.get("T") or d.get("E") or 0),
        position_side=o.get("ps") or "BOTH")


def normalize_execution_report(d: dict) -> VenueReport:
    """One spot ``executionReport`` frame → VenueReport (market SPOT). A cancel's own client id is
    in ``c``; the order's is in ``C``."""
    cid = (d.get("C") or d.get("c")) if d.get("x") == "CANCELED" else d.get("c")
    return VenueReport(
        market="SPOT", symbol=d["s"], client_order_id=cid or "", venue_order_id=str(d.get("i", "")), side=d["S"],
        order_type=d.get("o") or "", exec_type=d.get("x") or "", order_status=d.get("X") or "", qty=D(d.get("q")),
        price=D(d.get("p")), cum_qty=D(d.get("z")), last_qty=D(d.get("l")), last_price=D(d.get("L")),
        commission=D(d.get("n")), commission_asset=d.get("N") or "", trade_id=max(int(d.get("t") or 0), 0),
        is_maker=bool(d.get("m")), ts=int(d.get("T") or d.get("E") or 0))


ORDER_EVENTS = {"ORDER_TRADE_UPDATE": normalize_order_update, "executionReport": normalize_execution_report,
                "EXECUTION_REPORT": normalize_execution_report}


def normalize_user_event(d: dict) -> VenueReport | None:
    """An order update of either market → VenueReport; anything else → None."""
    fn = ORDER_EVENTS.get(d.get("e", ""))
    return fn(d) if fn else None


def is_listen_key_expired(d: dict) -> bool:
    return d.get("e") in ("listenKeyExpired", "LISTEN_KEY_EXPIRED")


def trade_report(market: str, order: dict, trade: dict, cum_qty: Decimal) -> VenueReport:
    """A fill read back from REST (``userTrades`` / ``myTrades`` + the order), as the stream would have
    reported it: the status is the order's at that fill."""
    qty = D(order.get("origQty"))
    return VenueReport(
        market=market, symbol=trade["symbol"], client_order_id=order.get("clientOrderId") or "",
        venue_order_id=str(order["orderId"]), side=order["side"], order_type=order.get("type") or "",
        exec_type="TRADE", order_status="FILLED" if cum_qty >= qty else "PARTIALLY_FILLED", qty=qty,
        price=D(order.get("price")), cum_qty=cum_qty, last_qty=D(trade["qty"]), last_price=D(trade["price"]),
        commission=D(trade.get("commission")), commission_asset=trade.get("commissionAsset") or "",
        trade_id=int(trade["id"]), realized_pnl=D(trade.get("realizedPnl")), reduce_only=bool(order.get("reduceOnly")),
        is_maker=bool(trade.get("maker", trade.get("isMaker"))), ts=int(trade["time"]),
        position_side=trade.get("positionSide") or "BOTH")


def new_report(market: str, order: dict) -> VenueReport:
    """The NEW execution of an order read back from REST (an open order whose NEW push was missed)."""
    return VenueReport(
        market=market, symbol=order["symbol"], client_order_id=order.get("clientOrderId") or "",
        venue_order_id=str(order["orderId"]), side=order["side"], order_type=order.get("type") or "",
        exec_type="NEW", order_status="NEW", qty=D(order.get("origQty")), price=D(order.get("price")),
        reduce_only=bool(order.get("reduceOnly")), ts=int(order.get("time") or order.get("updateTime") or 0))


def trade_member(order_id, trade_id) -> str:
    """A trade's identity among the reports (``dedupe_member``), from the report or from REST rows."""
    return f"{order_id}:t:{trade_id}"


def seen_member(market: str, symbol: str, member: str) -> str:
    """The seen window's member (``s1_seen_window``): order ids are per symbol, so qualified by both."""
    return f"{market}:{symbol}:{member}"


def dedupe_member(rep: VenueReport) -> str:
    """Identity of one report: trades by trade id, other executions by (exec type, status)."""
    if rep.exec_type == "TRADE" and rep.trade_id:
        return trade_member(rep.venue_order_id, rep.trade_id)
    return f"{rep.venue_order_id}:x:{rep.exec_type}:{rep.order_status}"


def is_funding_update(d: dict) -> bool:
    return d.get("e") == "ACCOUNT_UPDATE" and (d.get("a") or {}).get("m") == "FUNDING_FEE"


