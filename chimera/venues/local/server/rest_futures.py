"""USDT-M futures REST endpoints (/fapi)."""

from __future__ import annotations

import copy
from bisect import bisect_right

from aiohttp import web

from ..engine.futures import QUOTE
from ..engine.model import FUTURES, ZERO, Order, VenueError, fmt
from .auth import Params
from .formats import fut_order, fut_trade, position_row, s8

INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")


def register(srv, app: web.Application) -> None:
    add = app.router.add_route
    r = srv.route
    add("GET", "/fapi/v1/ping", r(lambda s, p, a: {}))
    add("GET", "/fapi/v1/time", r(lambda s, p, a: {"serverTime": s.clock.time_ms}))
    add("GET", "/fapi/v1/exchangeInfo", r(exchange_info, weight=1))
    add("GET", "/fapi/v1/depth", r(lambda s, p, a: depth(s, p, FUTURES), weight=5))
    add("GET", "/fapi/v1/klines", r(lambda s, p, a: klines(s, p, FUTURES), weight=5))
    add("GET", "/fapi/v1/premiumIndex", r(premium_index, weight=1))
    add("GET", "/fapi/v1/fundingRate", r(funding_rate, weight=1))
    add("GET", "/fapi/v1/ticker/bookTicker", r(lambda s, p, a: book_ticker(s, p, FUTURES), weight=2))
    for v in (1, 2):
        add("GET", f"/fapi/v{v}/ticker/price", r(lambda s, p, a: ticker_price(s, p, FUTURES), weight=1))
    add("POST", "/fapi/v1/order", r(new_order, "signed", order=True))
    add("GET", "/fapi/v1/order", r(query_order, "signed"))
    add("DELETE", "/fapi/v1/order", r(cancel_order, "signed"))
    add("POST", "/fapi/v1/batchOrders", r(batch_orders, "signed", weight=5, order=True))
    add("GET", "/fapi/v1/openOrders", r(open_orders, "signed"))
    add("GET", "/fapi/v1/openOrder", r(query_order, "signed"))
    add("DELETE", "/fapi/v1/allOpenOrders", r(cancel_all, "signed"))
    add("POST", "/fapi/v1/leverage", r(leverage, "signed"))
    add("POST", "/fapi/v1/marginType", r(margin_type, "signed"))
    for v in (2, 3):
        add("GET", f"/fapi/v{v}/positionRisk", r(lambda s, p, a, v=v: position_risk(s, p, a, v), "signed", weight=5))
        add("GET", f"/fapi/v{v}/account", r(lambda s, p, a, v=v: account(s, p, a, v), "signed", weight=5))
        add("GET", f"/fapi/v{v}/balance", r(balance, "signed", weight=5))
    add("GET", "/fapi/v1/userTrades", r(user_trades, "signed", weight=5))
    add("GET", "/fapi/v1/income", r(income, "signed", weight=30))
    add("GET", "/fapi/v1/forceOrders", r(force_orders, "signed", weight=20))
    add("POST", "/fapi/v1/listenKey", r(lambda s, p, a: {"listenKey": s.listen_key(a, FUTURES)}, "key"))
    add("PUT", "/fapi/v1/listenKey", r(keepalive_key, "key"))
    add("DELETE", "/fapi/v1/listenKey", r(close_key, "key"))


def exchange_info(srv, p: Params, account) -> dict:
    info = copy.deepcopy(srv.info.raw[FUTURES])
    info["serverTime"] = srv.clock.time_ms
    return info


def _symbol(srv, p: Params, market: str) -> str:
    sym = p.str("symbol", required=True)
    srv.info.get(market, sym)
    return sym


def depth(srv, p: Params, market: str) -> dict:
    sym = _symbol(srv, p, market)
    limit = p.int("limit", default=500 if market == FUTURES else 100)
    m = srv.engine.markets[market][sym]
    if m.depth_id:
        # Recorded diff depth: the book and the id the diff stream continues from (U/u/pu).
        bids, asks = m.depth_book(limit)
        last_id = m.depth_id
    else:
        bids = m.levels("SELL")[:limit]
        asks = m.levels("BUY")[:limit]
        if not bids and m.best_bid():
            bids = [(m.best_bid(), ZERO)]
        if not asks and m.best_ask():
            asks = [(m.best_ask(), ZERO)]
        last_id = srv.clock.processed
    out = {"lastUpdateId": last_id, "bids": [[fmt(a), fmt(b)] for a, b in bids],
           "asks": [[fmt(a), fmt(b)] for a, b in asks]}
    if market == FUTURES:
        out.update({"E": srv.clock.time_ms, "T": srv.clock.time_ms})
    return out


def klines(srv, p: Params, market: str) -> list:
    sym = _symbol(srv, p, market)
    interval = p.str("interval", required=True)
    if interval not in INTERVALS:
        raise VenueError(-1120, "Invalid interval.")
    limit = min(p.int("limit", default=500), 1500 if market == FUTURES else 1000)
    rows = srv.feed.klines.get((market, sym, interval), [])
    from ..loaders import INTERVAL_MS

    width = INTERVAL_MS.get(interval, 60_000)
    now = srv.clock.time_ms
    end = min(p.int("endTime", default=now), now)
    start = p.int("startTime")
    times = [k[0] for k in rows]
    hi = bisect_right(times, end)
    lo = bisect_right(times, start - 1) if start is not None else max(0, hi - limit)
    out = []
    for t, o, h, low, c, v in rows[lo:hi][:limit]:
        if t + width - 1 > now:
            # The bar still forming: only the part of the intrabar path already replayed is visible.
            c = srv.engine.markets[market][sym].last or c
        out.append([t, fmt(o), fmt(h), fmt(low), fmt(c), fmt(v), t + width - 1, "0", 0, "0", "0", "0"])
    return out


def premium_index(srv, p: Params, account):
    syms = [p.str("symbol")] if p.str("symbol") else list(srv.info.rules[FUTURES])
    out = []
    for sym in syms:
        srv.info.get(FUTURES, sym)
        m = srv.engine.markets[FUTURES][sym]
        rate, nxt = srv._funding_info(sym, srv.clock.time_ms)
        out.append({"symbol": sym, "markPrice": fmt(m.mark_or_last), "indexPrice": fmt(m.mark_or_last),
                    "estimatedSettlePrice": fmt(m.mark_or_last), "lastFundingRate": rate,
                    "interestRate": "0.00010000", "nextFundingTime": nxt, "time": srv.clock.time_ms})
    return out[0] if p.str("symbol") else out


def funding_rate(srv, p: Params, account) -> list:
    sym = p.str("symbol")
    limit = min(p.int("limit", default=100), 1000)
    now = srv.clock.time_ms
    start = p.int("startTime", default=0)
    end = min(p.int("endTime", default=now), now)
    out = []
    for s, series in srv.feed.funding.items():
        if sym and s != sym:
            continue
        for ev in series:
            if start <= ev.time <= end:
                out.append({"symbol": s, "fundingRate": format(ev.rate, "f"), "fundingTime": ev.time,
                            "markPrice": ""})
    out.sort(key=lambda x: x["fundingTime"])
    return out[-limit:] if p.str("startTime") is None else out[:limit]


def book_ticker(srv, p: Params, market: str):
    syms = [p.str("symbol")] if p.str("symbol") else list(srv.info.rules[market])
    out = []
    for sym in syms:
        srv.info.get(market, sym)
        m = srv.engine.markets[market][sym]
        row = {"symbol": sym, "bidPrice": fmt(m.best_bid()), "bidQty": fmt(m.bid_qty), "askPrice": fmt(m.best_ask()),
               "askQty": fmt(m.ask_qty)}
        if market == FUTURES:
            row["time"] = srv.clock.time_ms
        out.append(row)
    return out[0] if p.str("symbol") else out


def ticker_price(srv, p: Params, market: str):
    syms = [p.str("symbol")] if p.str("symbol") else list(srv.info.rules[market])
    out = []
    for sym in syms:
        srv.info.get(market, sym)
        out.append({"symbol": sym, "price": fmt(srv.engine.markets[market][sym].last), "time": srv.clock.time_ms})
    return out[0] if p.str("symbol") else out


def _place(srv, p: Params, account: str) -> dict:
    otype = p.str("type")
    ack, order = srv.engine.place_futures(
        account, p.str("symbol", required=True), p.str("side"), otype, qty=p.dec("quantity"),
        price=p.dec("price"), stop_price=p.dec("stopPrice"), tif=p.str("timeInForce"),
        reduce_only=p.bool("reduceOnly"), close_position=p.bool("closePosition"),
        working_type=p.str("workingType"), client_id=p.str("newClientOrderId"))
    resp_type = p.str("newOrderRespType") or "ACK"
    return fut_order(order if resp_type == "RESULT" else ack)


def new_order(srv, p: Params, account: str) -> dict:
    if p.str("positionSide") not in (None, "BOTH"):
        raise VenueError(-4061, "Order's position side does not match user's setting.")
    return _place(srv, p, account)


def batch_orders(srv, p: Params, account: str) -> list:
    import json

    raw = p.str("batchOrders", required=True)
    try:
        items = json.loads(raw)
    except ValueError:
        raise VenueError(-1130, "Data sent for parameter 'batchOrders' is not valid.") from None
    if not isinstance(items, list) or not 1 <= len(items) <= 5:
        raise VenueError(-1130, "Data sent for parameter 'batchOrders' is not valid.")
    out = []
    for item in items:
        try:
            out.append(_place(srv, Params({k: str(v).lower() if isinstance(v, bool) else str(v)
                                           for k, v in item.items()}), account))
        except VenueError as exc:
            out.append({"code": exc.code, "msg": exc.msg})
    return out


def find_order(srv, p: Params, account: str, market: str) -> Order:
    """The order a query names by symbol and orderId or origClientOrderId (both markets)."""
    return srv.engine.find_order(market, account, p.str("symbol", required=True), p.int("orderId"),
                                 p.str("origClientOrderId"))


def cancel(srv, p: Params, account: str, market: str) -> Order:
    return srv.engine.cancel(market, account, p.str("symbol", required=True), p.int("orderId"),
                             p.str("origClientOrderId"))


def open_orders_of(srv, p: Params, account: str, market: str) -> list[Order]:
    """The account's open orders, of one symbol if the request names one (which must exist)."""
    sym = p.str("symbol")
    if sym:
        srv.info.get(market, sym)
    return srv.engine.open_orders_of(market, account, sym)


def query_order(srv, p: Params, account: str) -> dict:
    return fut_order(find_order(srv, p, account, FUTURES))


def cancel_order(srv, p: Params, account: str) -> dict:
    return fut_order(cancel(srv, p, account, FUTURES))


def open_orders(srv, p: Params, account: str) -> list:
    return [fut_order(o) for o in open_orders_of(srv, p, account, FUTURES)]


def cancel_all(srv, p: Params, account: str) -> dict:
    srv.engine.cancel_all(FUTURES, account, p.str("symbol", required=True))
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def leverage(srv, p: Params, account: str) -> dict:
    sym = _symbol(srv, p, FUTURES)
    lev = p.int("leverage", required=True)
    if not 1 <= lev <= 125:
        raise VenueError(-4028, f"Leverage {lev} is not valid")
    acc = srv.engine.accounts[account]
    pos = acc.position(sym)
    if pos.amt != 0 and lev < pos.leverage:
        # Isolated margin already posted cannot shrink under an open position (Binance: -4161).
        raise VenueError(-4161, "Leverage reduction is not supported in Isolated Margin Mode with open positions.")
    acc.leverage[sym] = lev
    if pos.amt == 0:
        pos.leverage = lev
    return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": sym}


def margin_type(srv, p: Params, account: str) -> dict:
    sym = _symbol(srv, p, FUTURES)
    mt = p.str("marginType", required=True)
    if mt == "ISOLATED":
        raise VenueError(-4046, "No need to change margin type.")
    if mt == "CROSSED" and srv.engine.accounts[account].position(sym).amt != 0:
        raise VenueError(-4048, "Margin type cannot be changed if there exists position.")
    if mt == "CROSSED" and srv.engine.open_orders_of(FUTURES, account, sym):
        raise VenueError(-4047, "Margin type cannot be changed if there exists open orders.")
    if mt == "CROSSED":
        raise VenueError(-1130, "Data sent for parameter 'marginType' is not valid: the local venue models "
                                "ISOLATED margin only.")
    raise VenueError(-1130, "Data sent for parameter 'marginType' is not valid.")


def position_risk(srv, p: Params, account: str, version: int) -> list:
    acc = srv.engine.accounts[account]
    sym = p.str("symbol")
    syms = [sym] if sym else list(srv.info.rules[FUTURES])
    rows = []
    for s in syms:
        srv.info.get(FUTURES, s)
        pos = acc.position(s)
        if version == 3 and pos.amt == 0:
            continue
        rows.append(position_row(srv.engine, pos, version))
    return rows


def _balance_row(srv, account: str) -> dict:
    acc = srv.engine.accounts[account]
    wallet = srv.engine.fut_wallet(acc)
    avail = srv.engine.fut_available(acc)
    return {"accountAlias": "SgsR", "asset": QUOTE, "balance": s8(wallet), "crossWalletBalance": s8(wallet),
            "crossUnPnl": "0.00000000", "availableBalance": s8(avail), "maxWithdrawAmount": s8(max(avail, ZERO)),
            "marginAvailable": True, "updateTime": srv.clock.time_ms}


def balance(srv, p: Params, account: str) -> list:
    return [_balance_row(srv, account)]


def account(srv, p: Params, account: str, version: int) -> dict:
    eng = srv.engine
    acc = eng.accounts[account]
    wallet = eng.fut_wallet(acc)
    positions = [pos for pos in acc.positions.values() if pos.amt != 0 or version == 2]
    upnl = sum((eng.fut_unrealized(pos) for pos in positions), ZERO)
    init = sum((pos.isolated_margin for pos in positions), ZERO)
    order_margin = eng.fut_order_margin(acc)
    avail = eng.fut_available(acc)
    asset = {"asset": QUOTE, "walletBalance": s8(wallet), "unrealizedProfit": s8(upnl),
             "marginBalance": s8(wallet + upnl), "maintMargin": "0", "initialMargin": s8(init + order_margin),
             "positionInitialMargin": s8(init), "openOrderInitialMargin": s8(order_margin),
             "crossWalletBalance": s8(wallet), "crossUnPnl": "0.00000000", "availableBalance": s8(avail),
             "maxWithdrawAmount": s8(max(avail, ZERO)), "marginAvailable": True, "updateTime": srv.clock.time_ms}
    return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True, "updateTime": 0,
            "multiAssetsMargin": False, "tradeGroupId": -1,
            "totalInitialMargin": s8(init + order_margin), "totalMaintMargin": "0",
            "totalWalletBalance": s8(wallet), "totalUnrealizedProfit": s8(upnl),
            "totalMarginBalance": s8(wallet + upnl), "totalPositionInitialMargin": s8(init),
            "totalOpenOrderInitialMargin": s8(order_margin), "totalCrossWalletBalance": s8(wallet),
            "totalCrossUnPnl": "0.00000000", "availableBalance": s8(avail), "maxWithdrawAmount": s8(max(avail, ZERO)),
            "assets": [asset], "positions": [position_row(eng, pos, version) for pos in positions]}


def _window(p: Params, rows: list, limit_default: int, limit_max: int) -> list:
    start = p.int("startTime")
    end = p.int("endTime")
    limit = min(p.int("limit", default=limit_default), limit_max)
    rows = [r for r in rows if (start is None or r.time >= start) and (end is None or r.time <= end)]
    return rows[:limit] if start is not None else rows[-limit:]


def user_trades(srv, p: Params, account: str) -> list:
    sym = _symbol(srv, p, FUTURES)
    order_id = p.int("orderId")
    rows = [t for t in srv.engine.trades if t.market == FUTURES and t.account == account and t.symbol == sym
            and (order_id is None or t.order_id == order_id)]
    return [fut_trade(t) for t in trades_window(p, rows, 500, 1000)]


def trades_window(p: Params, rows: list, limit_default: int, limit_max: int) -> list:
    """``_window`` plus Binance's ``fromId``: trades with an id from it on, oldest first (a reader pages by
    id where many trades share a millisecond). Binance refuses ``fromId`` with a time range."""
    from_id = p.int("fromId")
    if from_id is None:
        return _window(p, rows, limit_default, limit_max)
    if p.int("startTime") is not None or p.int("endTime") is not None:
        raise VenueError(-1128, "Combination of optional parameters invalid.")
    limit = min(p.int("limit", default=limit_default), limit_max)
    return [t for t in rows if t.trade_id >= from_id][:limit]


def income(srv, p: Params, account: str) -> list:
    sym = p.str("symbol")
    kind = p.str("incomeType")
    rows = [i for i in srv.engine.income if i.account == account and (not sym or i.symbol == sym)
            and (not kind or i.income_type == kind)]
    return [{"symbol": i.symbol, "incomeType": i.income_type, "income": s8(i.income), "asset": i.asset,
             "info": i.info or i.income_type, "time": i.time, "tranId": i.tran_id, "tradeId": i.trade_id}
            for i in _window(p, rows, 100, 1000)]


FORCE_ORDER_FIELDS = ("orderId", "symbol", "status", "clientOrderId", "price", "avgPrice", "origQty", "executedQty",
                      "cumQuote", "timeInForce", "type", "reduceOnly", "closePosition", "side", "positionSide",
                      "stopPrice", "workingType", "origType", "time", "updateTime")
WEEK_MS = 7 * 24 * 3600 * 1000


def auto_close_type(client_id: str) -> str | None:
    """Binance marks its own closing orders by client id: ``autoclose-<t>`` liquidation, ``adl_autoclose`` ADL."""
    if client_id.startswith("autoclose-"):
        return "LIQUIDATION"
    return "ADL" if client_id == "adl_autoclose" else None


def force_orders(srv, p: Params, account: str) -> list:
    """The account's liquidation (and ADL) orders, oldest first, as ``GET /fapi/v1/forceOrders``."""
    sym = p.str("symbol")
    if sym:
        srv.info.get(FUTURES, sym)
    kind = p.str("autoCloseType")
    if kind not in (None, "LIQUIDATION", "ADL"):
        raise VenueError(-1130, "Data sent for parameter 'autoCloseType' is not valid.")
    limit = p.int("limit", default=50)
    if not 1 <= limit <= 100:
        raise VenueError(-1130, "Data sent for parameter 'limit' is not valid.")
    end = p.int("endTime", default=srv.clock.time_ms)
    start = p.int("startTime", default=end - WEEK_MS)  # Binance: 7 days before endTime when not sent
    rows = sorted((o for o in srv.engine.orders.values()
                   if o.market == FUTURES and o.account == account and auto_close_type(o.client_id)
                   and (not sym or o.symbol == sym) and kind in (None, auto_close_type(o.client_id))
                   and start <= o.time <= end), key=lambda o: (o.time, o.order_id))
    # Binance reports a force order as the IOC LIMIT it placed at the bankruptcy price.
    return [{**{k: v for k, v in fut_order(o).items() if k in FORCE_ORDER_FIELDS}, "type": "LIMIT", "origType": "LIMIT"}
            for o in rows[:limit]]


def keepalive_key(srv, p: Params, account: str) -> dict:
    for k, v in srv.listen_keys.items():
        if v["account"] == account and v["market"] == FUTURES:
            v["keepalives"] = v.get("keepalives", 0) + 1  # visible to drills in the state file
            return {"listenKey": k}
    raise VenueError(-1125, "This listenKey does not exist.")


def close_key(srv, p: Params, account: str) -> dict:
    for k, v in list(srv.listen_keys.items()):
        if v["account"] == account and v["market"] == FUTURES:
            del srv.listen_keys[k]
    return {}


