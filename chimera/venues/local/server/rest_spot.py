"""Spot REST endpoints (/api/v3) and the wallet transfer endpoints (/sapi/v1/asset/transfer)."""

from __future__ import annotations

import copy

import msgspec
from aiohttp import web

from ..engine.futures import QUOTE
from ..engine.model import SPOT, VenueError
from .auth import Params
from .formats import s8, spot_order, spot_order_query, spot_trade
from .rest_futures import (
    book_ticker,
    cancel,
    depth,
    find_order,
    klines,
    open_orders_of,
    ticker_price,
    trades_window,
)

TRANSFER_TYPES = ("MAIN_UMFUTURE", "UMFUTURE_MAIN")


def register(srv, app: web.Application) -> None:
    add = app.router.add_route
    r = srv.route
    add("GET", "/api/v3/ping", r(lambda s, p, a: {}))
    add("GET", "/api/v3/time", r(lambda s, p, a: {"serverTime": s.clock.time_ms}))
    add("GET", "/api/v3/exchangeInfo", r(exchange_info, weight=20))
    add("GET", "/api/v3/depth", r(lambda s, p, a: depth(s, p, SPOT), weight=5))
    add("GET", "/api/v3/klines", r(lambda s, p, a: klines(s, p, SPOT), weight=2))
    add("GET", "/api/v3/ticker/bookTicker", r(lambda s, p, a: book_ticker(s, p, SPOT), weight=2))
    add("GET", "/api/v3/ticker/price", r(lambda s, p, a: ticker_price(s, p, SPOT), weight=2))
    add("POST", "/api/v3/order", r(new_order, "signed", order=True))
    add("GET", "/api/v3/order", r(query_order, "signed", weight=4))
    add("DELETE", "/api/v3/order", r(cancel_order, "signed"))
    add("GET", "/api/v3/openOrders", r(open_orders, "signed", weight=6))
    add("DELETE", "/api/v3/openOrders", r(cancel_open, "signed"))
    add("POST", "/api/v3/orderList/oco", r(new_oco, "signed", order=True))
    add("GET", "/api/v3/orderList", r(query_list, "signed", weight=4))
    add("DELETE", "/api/v3/orderList", r(cancel_list, "signed"))
    add("GET", "/api/v3/openOrderList", r(open_lists, "signed", weight=6))
    add("GET", "/api/v3/allOrderList", r(all_lists, "signed", weight=20))
    add("GET", "/api/v3/account", r(account, "signed", weight=20))
    add("GET", "/api/v3/myTrades", r(my_trades, "signed", weight=20))
    add("POST", "/api/v3/userDataStream", r(lambda s, p, a: {"listenKey": s.listen_key(a, SPOT)}, "key", weight=2))
    add("PUT", "/api/v3/userDataStream", r(keepalive, "key", weight=2))
    add("DELETE", "/api/v3/userDataStream", r(close_key, "key", weight=2))
    add("POST", "/sapi/v1/asset/transfer", r(transfer, "signed", weight=1))
    add("GET", "/sapi/v1/asset/transfer", r(transfer_history, "signed", weight=1))


def exchange_info(srv, p: Params, account) -> dict:
    info = copy.deepcopy(srv.info.raw[SPOT])
    info["serverTime"] = srv.clock.time_ms
    sym = p.str("symbol")
    if sym:
        srv.info.get(SPOT, sym)
        info["symbols"] = [s for s in info["symbols"] if s["symbol"] == sym]
    return info


def new_order(srv, p: Params, account: str) -> dict:
    otype = p.str("type")
    seen = len(srv.engine.trades)  # a new order's fills can only be among the trades this call appends
    ack, order = srv.engine.place_spot(
        account, p.str("symbol", required=True), p.str("side"), otype, qty=p.dec("quantity"),
        quote_qty=p.dec("quoteOrderQty"), price=p.dec("price"), stop_price=p.dec("stopPrice"),
        tif=p.str("timeInForce"), client_id=p.str("newClientOrderId"))
    default = "FULL" if otype in ("MARKET", "LIMIT") else "ACK"
    resp_type = p.str("newOrderRespType") or default
    if resp_type == "ACK":
        return {"symbol": ack.symbol, "orderId": ack.order_id, "orderListId": ack.list_id,
                "clientOrderId": ack.client_id, "transactTime": ack.time}
    fills = [t for t in srv.engine.trades[seen:] if t.order_id == order.order_id]
    return spot_order(order, fills if resp_type == "FULL" else None)


def query_order(srv, p: Params, account: str) -> dict:
    return spot_order_query(find_order(srv, p, account, SPOT))


def cancel_order(srv, p: Params, account: str) -> dict:
    o = cancel(srv, p, account, SPOT)
    return {**spot_order(o), "origClientOrderId": o.client_id}


def open_orders(srv, p: Params, account: str) -> list:
    return [spot_order_query(o) for o in open_orders_of(srv, p, account, SPOT)]


def cancel_open(srv, p: Params, account: str) -> list:
    return [spot_order(o) for o in srv.engine.cancel_all(SPOT, account, p.str("symbol", required=True))]


class ListOrder(msgspec.Struct, frozen=True):
    """One member of an order list, as Binance lists it (``orders[]``)."""

    symbol: str
    orderId: int  # noqa: N815 - Binance's wire name
    clientOrderId: str  # noqa: N815


class OrderList(msgspec.Struct, frozen=True):
    """An order list (OCO) as ``GET /api/v3/orderList``, ``openOrderList`` and ``allOrderList`` answer it."""

    orderListId: int  # noqa: N815 - Binance's wire names throughout
    contingencyType: str  # noqa: N815
    listStatusType: str  # noqa: N815
    listOrderStatus: str  # noqa: N815
    listClientOrderId: str  # noqa: N815
    transactionTime: int  # noqa: N815
    symbol: str
    orders: tuple[ListOrder, ...]


def order_list(srv, lst: dict) -> OrderList:
    orders = tuple(ListOrder(symbol=o.symbol, orderId=o.order_id, clientOrderId=o.client_id)
                   for o in (srv.engine.orders[i] for i in lst["orderIds"]))
    return OrderList(orderListId=lst["orderListId"], contingencyType="OCO", listStatusType=lst["listStatusType"],
                     listOrderStatus=lst["listOrderStatus"], listClientOrderId=lst["listClientOrderId"],
                     transactionTime=lst["transactionTime"], symbol=lst["symbol"], orders=orders)


def open_lists(srv, p: Params, account: str) -> list:
    """``GET /api/v3/openOrderList``: the account's order lists still executing (every symbol)."""
    return [msgspec.to_builtins(order_list(srv, lst)) for lst in sorted(srv.engine.order_lists.values(),
                                                                         key=lambda x: x["orderListId"])
            if lst["account"] == account and lst["listOrderStatus"] != "ALL_DONE"]


def all_lists(srv, p: Params, account: str) -> list:
    """``GET /api/v3/allOrderList``: the account's order lists, oldest first, ``fromId``/``startTime``/
    ``endTime``/``limit`` (default 500, at most 1000) as on Binance."""
    from_id, start, end = p.int("fromId"), p.int("startTime"), p.int("endTime")
    limit = min(p.int("limit", default=500), 1000)
    rows = [lst for lst in sorted(srv.engine.order_lists.values(), key=lambda x: x["orderListId"])
            if lst["account"] == account and (from_id is None or lst["orderListId"] >= from_id)
            and (start is None or lst["transactionTime"] >= start) and (end is None or lst["transactionTime"] <= end)]
    return [msgspec.to_builtins(order_list(srv, lst)) for lst in rows[:limit]]


def _list_json(srv, lst: dict) -> dict:
    orders = [srv.engine.orders[i] for i in lst["orderIds"]]
    return {"orderListId": lst["orderListId"], "contingencyType": "OCO", "listStatusType": lst["listStatusType"],
            "listOrderStatus": lst["listOrderStatus"], "listClientOrderId": lst["listClientOrderId"],
            "transactionTime": lst["transactionTime"], "symbol": lst["symbol"],
            "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_id} for o in orders],
            "orderReports": [spot_order(o) for o in orders]}


def new_oco(srv, p: Params, account: str) -> dict:
    def leg(prefix: str) -> dict:
        return {"type": p.str(f"{prefix}Type"), "price": p.dec(f"{prefix}Price"),
                "stop_price": p.dec(f"{prefix}StopPrice"), "tif": p.str(f"{prefix}TimeInForce"),
                "client_id": p.str(f"{prefix}ClientOrderId")}

    lst = srv.engine.place_oco(account, p.str("symbol", required=True), p.str("side"), p.dec("quantity"),
                               leg("above"), leg("below"), p.str("listClientOrderId"))
    return _list_json(srv, lst)


def query_list(srv, p: Params, account: str) -> dict:
    lst = srv.engine.find_list(account, p.int("orderListId"), p.str("origClientOrderId"))
    out = _list_json(srv, lst)
    out.pop("orderReports")
    return out


def cancel_list(srv, p: Params, account: str) -> dict:
    lst = srv.engine.cancel_list(account, p.str("symbol", required=True), p.int("orderListId"),
                                 p.str("listClientOrderId"))
    return _list_json(srv, lst)


def account(srv, p: Params, account: str) -> dict:
    acc = srv.engine.accounts[account]
    rates = srv.engine.fees
    return {"makerCommission": int(rates.spot_maker * 10000), "takerCommission": int(rates.spot_taker * 10000),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": s8(rates.spot_maker), "taker": s8(rates.spot_taker), "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": srv.clock.time_ms,
            "accountType": "SPOT", "uid": abs(hash(account)) % 10**9,
            "balances": [{"asset": a, "free": s8(v[0]), "locked": s8(v[1])} for a, v in sorted(acc.spot.items())],
            "permissions": ["SPOT"]}


def my_trades(srv, p: Params, account: str) -> list:
    sym = p.str("symbol", required=True)
    srv.info.get(SPOT, sym)
    order_id = p.int("orderId")
    rows = [t for t in srv.engine.trades if t.market == SPOT and t.account == account and t.symbol == sym
            and (order_id is None or t.order_id == order_id)]
    return [spot_trade(t) for t in trades_window(p, rows, 500, 1000)]


def keepalive(srv, p: Params, account: str) -> dict:
    key = p.str("listenKey", required=True)
    if key not in srv.listen_keys:
        raise VenueError(-1125, "This listenKey does not exist.")
    srv.listen_keys[key]["keepalives"] = srv.listen_keys[key].get("keepalives", 0) + 1
    return {}


def close_key(srv, p: Params, account: str) -> dict:
    key = p.str("listenKey", required=True)
    srv.listen_keys.pop(key, None)
    return {}


def transfer(srv, p: Params, account: str) -> dict:
    kind = p.str("type", required=True)
    asset = p.str("asset", required=True)
    amount = p.dec("amount", required=True)
    if kind not in TRANSFER_TYPES:
        raise VenueError(-1128, "Combination of optional parameters invalid.")
    if asset != QUOTE:
        raise VenueError(-4003, "Only USDT transfers are modelled by the local venue.")
    if amount <= 0:
        raise VenueError(-1013, "Amount must be greater than zero.")
    eng = srv.engine
    acc = eng.accounts[account]
    if kind == "MAIN_UMFUTURE":
        if acc.spot_free(asset) < amount:
            raise VenueError(-5002, "You have insufficient balance.")
        acc.spot_add(asset, free=-amount)
        eng.fut_add_wallet(acc, amount)
    else:
        if eng.fut_available(acc) < amount:
            raise VenueError(-5002, "You have insufficient balance.")
        eng.fut_add_wallet(acc, -amount)
        acc.spot_add(asset, free=amount)
    tran_id = eng.next_id("tran")
    signed = amount if kind == "MAIN_UMFUTURE" else -amount
    eng._income(acc, "", "TRANSFER", signed)
    eng.transfers.append({"account": account, "asset": asset, "amount": s8(amount), "type": kind,
                          "status": "CONFIRMED", "tranId": tran_id, "timestamp": srv.clock.time_ms})
    eng.fut_account_event(acc, "DEPOSIT" if kind == "MAIN_UMFUTURE" else "WITHDRAW", [])
    eng.spot_account_event(acc, [asset])
    return {"tranId": tran_id}


def transfer_history(srv, p: Params, account: str) -> dict:
    kind = p.str("type", required=True)
    if kind not in TRANSFER_TYPES:
        raise VenueError(-1128, "Combination of optional parameters invalid.")
    size = min(p.int("size", default=10), 100)
    current = p.int("current", default=1)
    rows = [{k: v for k, v in t.items() if k != "account"} for t in srv.engine.transfers
            if t["account"] == account and t["type"] == kind]
    rows.sort(key=lambda t: t["tranId"], reverse=True)
    return {"total": len(rows), "rows": rows[(current - 1) * size: current * size]}


