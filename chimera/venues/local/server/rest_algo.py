"""Futures conditional (algo) orders: /fapi/v1/algoOrder, the path the current SDK uses for TP/SL.

An algo order is held by the engine as a stop order; algoId is that order's id.
"""

from __future__ import annotations

from aiohttp import web

from ..engine.model import FUTURES, Order, VenueError, fmt
from .auth import Params

ALGO_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")


def register(srv, app: web.Application) -> None:
    add = app.router.add_route
    r = srv.route
    add("POST", "/fapi/v1/algoOrder", r(new_algo, "signed", order=True))
    add("GET", "/fapi/v1/algoOrder", r(query_algo, "signed"))
    add("DELETE", "/fapi/v1/algoOrder", r(cancel_algo, "signed"))
    add("GET", "/fapi/v1/openAlgoOrders", r(open_algos, "signed"))


def algo_status(o: Order) -> str:
    if o.status == "NEW" and not o.triggered:
        return "NEW"
    if o.status == "CANCELED":
        return "CANCELED"
    if o.status == "EXPIRED" and not o.triggered:
        return "EXPIRED"
    return "FINISHED"


def algo_json(o: Order) -> dict:
    return {"algoId": o.order_id, "clientAlgoId": o.client_id, "algoType": "CONDITIONAL", "orderType": o.orig_type,
            "symbol": o.symbol, "side": o.side, "positionSide": "BOTH", "timeInForce": "GTC",
            "quantity": fmt(o.orig_qty), "algoStatus": algo_status(o), "actualOrderId": str(o.order_id)
            if o.triggered else "", "actualPrice": fmt(o.avg_price), "triggerPrice": fmt(o.stop_price),
            "price": "0", "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": o.working_type, "priceMatch": "NONE", "closePosition": o.close_position,
            "priceProtect": False, "reduceOnly": o.reduce_only, "createTime": o.time, "updateTime": o.update_time,
            "triggerTime": o.update_time if o.triggered else 0, "goodTillDate": 0}


def new_algo(srv, p: Params, account: str) -> dict:
    if p.str("algoType", required=True) != "CONDITIONAL":
        raise VenueError(-1130, "Data sent for parameter 'algoType' is not valid.")
    otype = p.str("type", required=True)
    if otype not in ALGO_TYPES:
        raise VenueError(-1116, "Invalid orderType.")
    trigger = p.dec("triggerPrice", required=True)
    _, order = srv.engine.place_futures(
        account, p.str("symbol", required=True), p.str("side"), otype, qty=p.dec("quantity"), stop_price=trigger,
        reduce_only=p.bool("reduceOnly"), close_position=p.bool("closePosition"),
        working_type=p.str("workingType"), client_id=p.str("clientAlgoId"))
    return algo_json(order)


def _find(srv, p: Params, account: str) -> Order:
    algo_id = p.int("algoId")
    cid = p.str("clientAlgoId")
    if algo_id is None and not cid:
        raise VenueError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
    hits = [o for o in srv.engine.orders.values() if o.account == account and o.market == FUTURES
            and o.orig_type in ALGO_TYPES and (o.order_id == algo_id if algo_id is not None else o.client_id == cid)]
    if not hits:
        raise VenueError(-2013, "Order does not exist.")
    return sorted(hits, key=lambda o: (o.is_open, o.order_id))[-1]


def query_algo(srv, p: Params, account: str) -> dict:
    return algo_json(_find(srv, p, account))


def cancel_algo(srv, p: Params, account: str) -> dict:
    try:
        o = _find(srv, p, account)
    except VenueError:
        raise VenueError(-2011, "Unknown order sent.") from None
    if not o.is_open or o.triggered:
        raise VenueError(-2011, "Unknown order sent.")
    srv.engine.cancel(FUTURES, account, o.symbol, o.order_id, None)
    return {"algoId": o.order_id, "clientAlgoId": o.client_id, "code": "200", "msg": "success"}


def open_algos(srv, p: Params, account: str) -> list:
    sym = p.str("symbol")
    return [algo_json(o) for o in srv.engine.open_orders_of(FUTURES, account, sym)
            if o.orig_type in ALGO_TYPES and not o.triggered]
