"""Binance JSON shapes for orders, trades and user-data events (field names as Binance sends them)."""

from __future__ import annotations

from decimal import Decimal

from ..engine.futures import liquidation_price
from ..engine.model import FUTURES, ZERO, Event, Order, Position, fmt


def s8(v: Decimal) -> str:
    return fmt(v, 8)


def fut_order(o: Order) -> dict:
    return {
        "orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_id,
        "price": fmt(o.price), "avgPrice": fmt(o.avg_price.normalize() if o.executed_qty else ZERO),
        "origQty": fmt(o.orig_qty), "executedQty": fmt(o.executed_qty), "cumQty": fmt(o.executed_qty),
        "cumQuote": fmt(o.cum_quote), "timeInForce": o.time_in_force, "type": o.type,
        "reduceOnly": o.reduce_only, "closePosition": o.close_position, "side": o.side, "positionSide": "BOTH",
        "stopPrice": fmt(o.stop_price), "workingType": o.working_type, "priceProtect": False,
        "origType": o.orig_type, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0, "time": o.time, "updateTime": o.update_time,
    }


def spot_order(o: Order, with_fills: list | None = None) -> dict:
    out = {
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": o.list_id, "clientOrderId": o.client_id,
        "transactTime": o.update_time, "price": s8(o.price), "origQty": s8(o.orig_qty),
        "executedQty": s8(o.executed_qty), "origQuoteOrderQty": "0.00000000",
        "cummulativeQuoteQty": s8(o.cum_quote), "status": o.status, "timeInForce": o.time_in_force,
        "type": o.orig_type, "side": o.side, "workingTime": o.time, "selfTradePreventionMode": "EXPIRE_MAKER",
    }
    if o.stop_price:
        out["stopPrice"] = s8(o.stop_price)
    if with_fills is not None:
        out["fills"] = [{"price": s8(t.price), "qty": s8(t.qty), "commission": s8(t.commission),
                         "commissionAsset": t.commission_asset, "tradeId": t.trade_id} for t in with_fills]
    return out


def spot_order_query(o: Order) -> dict:
    out = spot_order(o)
    out.pop("transactTime")
    out.update({"stopPrice": s8(o.stop_price), "icebergQty": "0.00000000", "time": o.time,
                "updateTime": o.update_time, "isWorking": o.is_open and not o.is_stop})
    return out


def fut_trade(t) -> dict:
    return {"buyer": t.side == "BUY", "commission": s8(t.commission), "commissionAsset": t.commission_asset,
            "id": t.trade_id, "maker": t.maker, "orderId": t.order_id, "price": fmt(t.price), "qty": fmt(t.qty),
            "quoteQty": fmt(t.quote_qty), "realizedPnl": s8(t.realized_pnl), "side": t.side,
            "positionSide": "BOTH", "symbol": t.symbol, "time": t.time}


def spot_trade(t) -> dict:
    return {"symbol": t.symbol, "id": t.trade_id, "orderId": t.order_id, "orderListId": t.order_list_id,
            "price": s8(t.price), "qty": s8(t.qty), "quoteQty": s8(t.quote_qty), "commission": s8(t.commission),
            "commissionAsset": t.commission_asset, "time": t.time, "isBuyer": t.side == "BUY",
            "isMaker": t.maker, "isBestMatch": True}


def position_row(engine, pos: Position, version: int) -> dict:
    market = engine.markets[FUTURES].get(pos.symbol)
    mark = market.mark_or_last if market else ZERO
    mmr = engine.info.get(FUTURES, pos.symbol).maint_margin_rate
    upnl = engine.fut_unrealized(pos)
    notional = pos.amt * mark
    row = {
        "symbol": pos.symbol, "positionSide": "BOTH", "positionAmt": fmt(pos.amt), "entryPrice": fmt(pos.entry_price),
        "breakEvenPrice": fmt(pos.entry_price), "markPrice": fmt(mark), "unRealizedProfit": s8(upnl),
        "liquidationPrice": fmt(liquidation_price(pos, mmr).quantize(Decimal("0.01")) if pos.amt else ZERO),
        "isolatedMargin": s8(pos.isolated_margin + upnl if pos.amt else ZERO), "notional": s8(notional),
        "marginAsset": "USDT", "isolatedWallet": s8(pos.isolated_margin),
        "initialMargin": s8(abs(notional) / pos.leverage), "maintMargin": s8(abs(notional) * mmr),
        "positionInitialMargin": s8(abs(notional) / pos.leverage), "openOrderInitialMargin": "0",
        "adl": 0, "bidNotional": "0", "askNotional": "0", "updateTime": pos.update_time,
    }
    if version == 2:
        row.update({"leverage": str(pos.leverage), "marginType": "isolated", "isAutoAddMargin": "false",
                    "maxNotionalValue": "1000000"})
    return row


def user_event(engine, ev: Event) -> dict:
    """Translate a domain event to the exact user-data payload Binance pushes."""
    if ev.market == FUTURES:
        return _fut_event(engine, ev)
    return _spot_event(ev)


def _fut_event(engine, ev: Event) -> dict:
    if ev.kind == "order":
        o, t = ev.order, ev.trade
        return {"e": "ORDER_TRADE_UPDATE", "E": ev.time, "T": ev.time, "o": {
            "s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type, "f": o.time_in_force,
            "q": fmt(o.orig_qty), "p": fmt(o.price), "ap": fmt(o.avg_price), "sp": fmt(o.stop_price),
            "x": ev.exec_type, "X": o.status, "i": o.order_id, "l": fmt(t.qty if t else ZERO),
            "z": fmt(o.executed_qty), "L": fmt(t.price if t else ZERO), "N": "USDT",
            "n": s8(t.commission if t else ZERO), "T": o.update_time, "t": t.trade_id if t else 0,
            "b": "0", "a": "0", "m": bool(t and t.maker), "R": o.reduce_only, "wt": o.working_type,
            "ot": o.orig_type, "ps": "BOTH", "cp": o.close_position, "rp": s8(t.realized_pnl if t else ZERO),
            "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0}}
    if ev.kind == "account":
        return {"e": "ACCOUNT_UPDATE", "E": ev.time, "T": ev.time, "a": {
            "m": ev.reason,
            "B": [{"a": a, "wb": s8(wb), "cw": s8(cw), "bc": "0"} for a, wb, cw in ev.balances],
            "P": [{"s": p.symbol, "pa": fmt(p.amt), "ep": fmt(p.entry_price), "bep": fmt(p.entry_price),
                   "cr": "0", "up": s8(engine.fut_unrealized(p)), "mt": "isolated", "iw": s8(p.isolated_margin),
                   "ps": "BOTH"} for p in ev.positions]}}
    if ev.kind == "margin_call":
        wallet = engine.fut_wallet(engine.accounts[ev.account])
        return {"e": "MARGIN_CALL", "E": ev.time, "cw": s8(wallet), "p": [
            {"s": p.symbol, "ps": "BOTH", "pa": fmt(p.amt), "mt": "ISOLATED", "iw": s8(p.isolated_margin),
             "mp": fmt(ev.data["mark"]), "up": s8(engine.fut_unrealized(p)), "mm": s8(ev.data["maint"])}
            for p in ev.positions]}
    raise ValueError(ev.kind)


def _spot_event(ev: Event) -> dict:
    if ev.kind == "order":
        o, t = ev.order, ev.trade
        return {"e": "executionReport", "E": ev.time, "s": o.symbol, "c": o.client_id, "S": o.side,
                "o": o.orig_type, "f": o.time_in_force, "q": s8(o.orig_qty), "p": s8(o.price), "P": s8(o.stop_price),
                "F": "0.00000000", "g": o.list_id, "C": o.client_id if ev.exec_type == "CANCELED" else "",
                "x": ev.exec_type, "X": o.status, "r": "NONE", "i": o.order_id, "l": s8(t.qty if t else ZERO),
                "z": s8(o.executed_qty), "L": s8(t.price if t else ZERO), "n": s8(t.commission if t else ZERO),
                "N": t.commission_asset if t else None, "T": o.update_time, "t": t.trade_id if t else -1,
                "I": 0, "w": o.is_open and not o.is_stop, "m": bool(t and t.maker), "M": False, "O": o.time,
                "Z": s8(o.cum_quote), "Y": s8(t.quote_qty if t else ZERO), "Q": "0.00000000",
                "W": o.time, "V": "EXPIRE_MAKER"}
    if ev.kind == "account":
        return {"e": "outboundAccountPosition", "E": ev.time, "u": ev.time,
                "B": [{"a": a, "f": s8(free), "l": s8(locked)} for a, free, locked in ev.balances]}
    if ev.kind == "list":
        d = ev.data
        return {"e": "listStatus", "E": ev.time, "s": d["symbol"], "g": d["orderListId"], "c": "OCO",
                "l": d["listStatusType"], "L": d["listOrderStatus"], "r": "NONE", "C": d["listClientOrderId"],
                "T": d["transactionTime"],
                "O": [{"s": d["symbol"], "i": oid, "c": ""} for oid in d["orderIds"]]}
    raise ValueError(ev.kind)
