"""The SDK's asyncio loop on a thread of its own, plus the worker threads that drain it.

Both S1 connectors (market data, user data) have the same lifecycle: the SDK's callbacks only
enqueue frames; plain threads publish them. Stopping must join those threads *before* closing
the SDK connection on its loop, then stop the loop, so no frame is published half-way.
"""

from __future__ import annotations

import asyncio
import threading

from loguru import logger


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()
        self.workers: list[threading.Thread] = []

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.workers.append(t)

    def shutdown(self, stop: threading.Event, conn, label: str) -> None:
        stop.set()
        for t in self.workers:
            t.join(10)
        if conn is not None:
            try:
                self.run(conn.close_connection(close_session=True), timeout=5)
            except Exception as exc:  # closing a dead socket: nothing left to do
                logger.debug("{} close: {}", label, exc)
        self.stop()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
