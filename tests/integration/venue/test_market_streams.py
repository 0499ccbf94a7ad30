"""Market streams from a real recording: SUBSCRIBE, combined frames, raw /ws, UNSUBSCRIBE."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.support.polling import wait_until


def test_combined_and_raw_streams_replay_the_recording(ws2023_venue):
    v = ws2023_venue

    async def scenario():
        async with aiohttp.ClientSession() as s:
            combined = await s.ws_connect(f"{v.ws_url}/market/stream")
            await combined.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@bookTicker",
                                                                                  "btcusdt@markPrice@1s"], "id": 1}))
            ack = json.loads((await combined.receive()).data)
            raw = await s.ws_connect(f"{v.ws_url}/ws/btcusdt@trade")
            loop = asyncio.get_event_loop()
            await loop.run_in_executor(None, lambda: wait_until(lambda: len(v.server.hub.conns) == 2))
            await loop.run_in_executor(None, lambda: v.advance(events=3000))
            frames, raws = [], []
            while len(raws) < 5:
                raws.append(json.loads((await raw.receive(timeout=5)).data))
            seen = set()
            while seen != {"btcusdt@trade", "btcusdt@bookTicker", "btcusdt@markPrice@1s"}:
                msg = json.loads((await combined.receive(timeout=5)).data)
                frames.append(msg)
                seen.add(msg["stream"])
            await combined.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            return ack, frames, raws

    ack, frames, raws = asyncio.run(scenario())
    assert ack == {"result": None, "id": 1}
    trade = next(f["data"] for f in frames if f["stream"] == "btcusdt@trade")
    assert trade["e"] == "trade" and trade["s"] == "BTCUSDT" and {"p", "q", "T", "m", "t"} <= set(trade)
    bt = next(f["data"] for f in frames if f["stream"] == "btcusdt@bookTicker")
    assert bt["e"] == "bookTicker" and float(bt["b"]) < float(bt["a"])
    mp = next(f["data"] for f in frames if f["stream"] == "btcusdt@markPrice@1s")
    assert mp["e"] == "markPriceUpdate" and mp["T"] == 1680652800000
    assert all(r["e"] == "trade" for r in raws)
    assert [r["T"] for r in raws] == sorted(r["T"] for r in raws)
