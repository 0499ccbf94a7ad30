"""User-data streams over the SDK's WebSocket client: events in order with Binance field names."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import aiohttp
from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
    ConfigurationWebSocketStreams,
    DerivativesTradingUsdsFutures,
)

from tests.support.polling import wait_until

from .conftest import D, book, futures, inject, mark, spot, trade


class Collector:
    """Runs an asyncio WS client in its own thread and records every payload it receives."""

    def __init__(self):
        self.messages: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _as_dict(msg) -> dict:
    if isinstance(msg, dict):
        return msg
    if hasattr(msg, "actual_instance") and msg.actual_instance is not None:
        # The SDK consumes the "e" discriminator to pick the model; recover it from the model's name.
        inst = msg.actual_instance
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(inst).__name__).upper()
        return {"e": name, "model": type(inst).__name__, **inst.to_dict()}
    return msg.to_dict() if hasattr(msg, "to_dict") else json.loads(str(msg))


def test_futures_user_data_via_sdk_stream_in_order(bare_venue):
    inject(bare_venue, book("BTCUSDT", "30000.0", "30000.1"), trade("BTCUSDT", "30000.0"), mark("BTCUSDT", "30000"))
    fut = futures(bare_venue)
    key = fut.start_user_data_stream().data().listen_key
    col = Collector()
    client = DerivativesTradingUsdsFutures(
        config_ws_streams=ConfigurationWebSocketStreams(stream_url=bare_venue.ws_url))

    async def subscribe():
        conn = await client.websocket_streams.create_connection()
        stream = await conn.user_data(key)
        stream.on("message", lambda m: col.messages.append(_as_dict(m)))
        return conn

    conn = col.run(subscribe())
    try:
        wait_until(lambda: any(c.subs for c in bare_venue.server.hub.conns))
        o = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                          price=29990, new_client_order_id="ud-1").data()
        inject(bare_venue, trade("BTCUSDT", "29980.0"))
        inject(bare_venue, {"market": "futures", "symbol": "BTCUSDT", "kind": "funding", "rate": "0.0001"})
        wait_until(lambda: len(col.messages) >= 4)
        kinds = [(m["e"], m.get("o", {}).get("x") or m.get("a", {}).get("m")) for m in col.messages[:4]]
        assert kinds == [("ORDER_TRADE_UPDATE", "NEW"), ("ORDER_TRADE_UPDATE", "TRADE"),
                         ("ACCOUNT_UPDATE", "ORDER"), ("ACCOUNT_UPDATE", "FUNDING_FEE")]
        fill = col.messages[1]["o"]
        assert fill["i"] == o.order_id and fill["c"] == "ud-1" and fill["X"] == "FILLED"
        assert D(fill["L"]) == D("29990") and D(fill["l"]) == D("0.01") and fill["m"] is True
        assert D(fill["n"]) == D("29990") * D("0.01") * D("0.0002") and fill["N"] == "USDT"
        pos = col.messages[2]["a"]["P"][0]
        assert pos["s"] == "BTCUSDT" and D(pos["pa"]) == D("0.01") and D(pos["ep"]) == D("29990")
        times = [m["E"] for m in col.messages]
        assert times == sorted(times)
    finally:
        col.run(conn.close_connection(close_session=True))
        col.close()


def test_spot_user_data_execution_report_and_list_status(bare_venue):
    inject(bare_venue, book("BTCUSDT", "30000.00", "30000.01", "spot"), trade("BTCUSDT", "30000.00", "spot"))
    import requests

    key_hdr = {"X-MBX-APIKEY": bare_venue.keys["main"][0]}
    listen_key = requests.post(f"{bare_venue.base_url}/api/v3/userDataStream", headers=key_hdr,
                               timeout=5).json()["listenKey"]
    col = Collector()

    async def run_ws():
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{bare_venue.spot_ws_url}/ws/{listen_key}")

        async def reader():
            async for msg in ws:
                col.messages.append(json.loads(msg.data))
        col.loop.create_task(reader())
        return session, ws

    session, ws = col.run(run_ws())
    try:
        wait_until(lambda: any(listen_key in c.subs for c in bare_venue.server.hub.conns))
        sp = spot(bare_venue)
        sp.order_list_oco(symbol="BTCUSDT", side="SELL", quantity=0.2, above_type="LIMIT_MAKER", above_price=30500,
                          below_type="STOP_LOSS_LIMIT", below_stop_price=29500, below_price=29490,
                          below_time_in_force="GTC")
        inject(bare_venue, trade("BTCUSDT", "30500.01", "spot"))
        wait_until(lambda: any(m["e"] == "listStatus" and m["L"] == "ALL_DONE" for m in col.messages))
        reports = [(m["o"], m["x"], m["X"]) for m in col.messages if m["e"] == "executionReport"]
        assert reports == [("STOP_LOSS_LIMIT", "NEW", "NEW"), ("LIMIT_MAKER", "NEW", "NEW"),
                           ("LIMIT_MAKER", "TRADE", "FILLED"), ("STOP_LOSS_LIMIT", "EXPIRED", "EXPIRED")]
        assert any(m["e"] == "outboundAccountPosition" and {b["a"] for b in m["B"]} >= {"BTC", "USDT"}
                   for m in col.messages)
    finally:
        col.run(ws.close())
        col.run(session.close())
        col.close()
