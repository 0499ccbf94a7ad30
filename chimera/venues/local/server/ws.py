"""WebSocket hub: market streams (raw and combined) and user-data streams by listenKey."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

QUEUE_MAX = 10_000
HIGH_WATER = 1_000


@dataclass(eq=False)
class Conn:
    ws: web.WebSocketResponse
    market: str
    wrapped: bool
    subs: set[str] = field(default_factory=set)
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))


class WsHub:
    def __init__(self, listen_keys: dict[str, dict]):
        self.conns: set[Conn] = set()
        self.listen_keys = listen_keys

    def backlog(self) -> int:
        return max((c.queue.qsize() for c in self.conns), default=0)

    def wants(self, market: str, stream: str) -> bool:
        return any(c.market == market and stream in c.subs for c in self.conns)

    def subscribed_streams(self, market: str) -> set[str]:
        out: set[str] = set()
        for c in self.conns:
            if c.market == market:
                out |= c.subs
        return out

    def _send(self, conn: Conn, stream: str, data: dict) -> None:
        frame = {"stream": stream, "data": data} if conn.wrapped else data
        try:
            conn.queue.put_nowait(json.dumps(frame, separators=(",", ":")))
        except asyncio.QueueFull:
            # A client this far behind is disconnected, as Binance does with slow consumers.
            asyncio.get_event_loop().create_task(conn.ws.close())

    def publish(self, market: str, stream: str, data: dict) -> None:
        for c in list(self.conns):
            if c.market == market and stream in c.subs:
                self._send(c, stream, data)

    def publish_user(self, listen_key: str, data: dict) -> None:
        for c in list(self.conns):
            if listen_key in c.subs:
                self._send(c, listen_key, data)

    async def drop_all(self) -> int:
        conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(Exception):
                await c.ws.close(code=1001, message=b"chimera fault: dropped")
        return len(conns)

    async def close_all(self) -> None:
        await self.drop_all()

    async def handle(self, request: web.Request, market: str, wrapped: bool, initial: list[str]) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Conn(ws=ws, market=market, wrapped=wrapped)
        conn.subs.update(s for s in initial if s)
        self.conns.add(conn)
        writer = asyncio.get_event_loop().create_task(self._writer(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = self._control(conn, msg.data)
                    if reply is not None:
                        conn.queue.put_nowait(json.dumps(reply))
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self.conns.discard(conn)
            writer.cancel()
        return ws

    async def _writer(self, conn: Conn) -> None:
        try:
            while True:
                frame = await conn.queue.get()
                await conn.ws.send_str(frame)
        except (asyncio.CancelledError, ConnectionResetError, RuntimeError):
            return

    def _control(self, conn: Conn, text: str) -> dict | None:
        try:
            msg = json.loads(text)
            method, req_id = msg.get("method"), msg.get("id")
        except (ValueError, AttributeError):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}}
        params = msg.get("params") or []
        if method == "SUBSCRIBE":
            conn.subs.update(p for p in params if isinstance(p, str))
            return {"result": None, "id": req_id}
        if method == "UNSUBSCRIBE":
            conn.subs.difference_update(params)
            return {"result": None, "id": req_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.subs), "id": req_id}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return {"result": None if method == "SET_PROPERTY" else False, "id": req_id}
        return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": req_id}
