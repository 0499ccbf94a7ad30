"""S1 market data: the official futures SDK's WebSocket streams → normalized events on Redis.

Threads: the SDK runs on its own asyncio loop (``sdk_loop.LoopThread``); its callbacks only enqueue the
raw frame with its arrival time. One publisher thread drains the queue in order, so every
Redis write (and every REST backfill) happens sequentially, off the event loop.

* Streams per symbol: ``<s>@bookTicker``, ``<s>@aggTrade``, ``<s>@kline_1m``, ``<s>@markPrice@1s``
  (``<s>@depth`` is not subscribed yet: diff depth needs a local order book, see docs).
* Debounce: within one drained batch only the newest bookTicker per symbol is published.
* Closed klines: gap check against the last published open time → ``DATA_GAP`` on ops:events,
  REST backfill of the missing bars (published in order, ``backfilled=True``), ``BACKFILL_DONE``.
  Time alignment: a non-reference symbol's bar is held until the reference (BTC) bar of the
  same minute is published (at most ``align_wait_s``), so S2 always finds the reference in the
  bar store. Bars go to ``mkt:{bars}:<SYM>`` before the stream (``publish.py``).
* Reconnect: the SDK reconnects and resubscribes (``reconnect_delay``); its ``reconnect`` event
  publishes ``WS_RECONNECT``. A watchdog rebuilds the whole client with exponential backoff
  when the SDK gave up (no open connection).
* Metrics on ``metrics:events:s1.mkt_throughput`` (events/s published) and
  ``metrics:events:s1.ws_rtt`` (LIST_SUBSCRIPTIONS request → reply over the socket, ms).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import msgspec
from loguru import logger

from chimera.handlers.connectors.publish import publish_closed_kline
from chimera.handlers.connectors.sdk_loop import LoopThread
from chimera.schemas.messages import BookTicker, Kline, MetricEvent, OpsEvent
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance import market_data as md

BAR_MS = 60_000


class MarketDataConnector:
    def __init__(self, *, r, clock, ws_url: str, rest, symbols: list[str], reference: str = "BTCUSDT",
                 reconnect_delay_ms: int = 500, align_wait_s: float = 2.0, metrics_every_s: float = 10.0,
                 account_id: str = "main", on_status: Callable[[str, str], None] | None = None) -> None:
        self.r = r
        self.clock = clock
        self.producer = Producer(r, clock)
        self.ws_url = ws_url
        self.rest = rest
        self.symbols = [s.upper() for s in symbols]
        self.reference = reference.upper() if reference.upper() in self.symbols else None
        self.reconnect_delay_ms = reconnect_delay_ms
        self.align_wait_s = align_wait_s
        self.metrics_every_s = metrics_every_s
        self.account_id = account_id
        self.on_status = on_status or (lambda status, err: None)
        self.q: queue.Queue = queue.Queue()
        self.last_open: dict[str, int] = {}  # last published closed bar per symbol
        self.held: dict[str, list[tuple[Kline, float]]] = {}
        self.published = 0
        self.reconnects = 0
        self.gaps = 0
        self.backfilled = 0
        self._client = None
        self._loop: LoopThread | None = None
        self._stop = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------------

    def stream_names(self) -> list[str]:
        out = []
        for s in self.symbols:
            low = s.lower()
            out += [f"{low}@bookTicker", f"{low}@aggTrade", f"{low}@kline_1m", f"{low}@markPrice@1s"]
        return out

    def start(self) -> None:
        self._loop = LoopThread("s1-ws")
        self._connect()
        self._loop.spawn(self._publisher, "s1-publish")
        self._loop.spawn(self._watchdog, "s1-watchdog")

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.shutdown(self._stop, self._client, "s1")

    def _connect(self) -> None:
        from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
            ConfigurationWebSocketStreams,
            DerivativesTradingUsdsFutures,
        )

        assert self._loop is not None
        self.on_status("CONNECTING", "")
        cfg = ConfigurationWebSocketStreams(stream_url=self.ws_url, reconnect_delay=self.reconnect_delay_ms)
        client = DerivativesTradingUsdsFutures(config_ws_streams=cfg).websocket_streams
        names = self.stream_names()

        async def go():
            await client.create_connection()
            await client.subscribe(streams=names)
            for name in names:
                client.on("message", self._on_frame, name)
            client.on_connection("reconnect", self._on_reconnect)

        self._loop.run(go())
        self._client = client
        self.on_status("CONNECTED", "")

    # --- callbacks (SDK loop): enqueue only ---------------------------------------------------------

    def _on_frame(self, frame) -> None:
        self.q.put(("frame", frame, time.monotonic()))

    def _on_reconnect(self, *_args) -> None:
        self.q.put(("reconnect", None, time.monotonic()))

    # --- publisher thread --------------------------------------------------------------------------

    def _publisher(self) -> None:
        last_metrics = time.monotonic()
        count_since = 0
        while not self._stop.is_set():
            batch = []
            try:
                batch.append(self.q.get(timeout=0.05))
                while len(batch) < 1000:
                    batch.append(self.q.get_nowait())
            except queue.Empty:
                pass
            try:
                count_since += self._publish_batch(batch)
                self._release_held(force_older_than=self.align_wait_s)
            except Exception as exc:  # Redis or REST trouble: log and keep the loop alive
                logger.exception("s1 publisher: {}", exc)
                self._stop.wait(0.2)
            now = time.monotonic()
            if now - last_metrics >= self.metrics_every_s:
                self._metrics(count_since / (now - last_metrics))
                last_metrics, count_since = now, 0

    def _publish_batch(self, batch: list) -> int:
        # Debounce: keep only the newest bookTicker per symbol of this batch.
        newest_book: dict[str, int] = {}
        for i, (kind, frame, _) in enumerate(batch):
            if kind == "frame" and isinstance(frame, dict) and str(frame.get("stream", "")).endswith("@bookTicker"):
                newest_book[frame["stream"]] = i
        n = 0
        for i, (kind, frame, t) in enumerate(batch):
            if kind == "reconnect":
                self.reconnects += 1
                self._ops("WS_RECONNECT", {"url": self.ws_url, "count": str(self.reconnects)})
                self.on_status("CONNECTED", "reconnected after a drop")
                continue
            if not isinstance(frame, dict) or "stream" not in frame:
                continue
            name, data = frame["stream"], frame.get("data") or {}
            if name.endswith("@bookTicker") and newest_book.get(name) != i:
                continue
            n += self._publish_frame(name, data, t)
        return n

    def _publish_frame(self, name: str, data: dict, arrived: float) -> int:
        if name.endswith("@bookTicker"):
            m: BookTicker = md.normalize_book_ticker(data)
            self.producer.publish(keys.mkt_stream("perp", m.symbol), m, f"book:{m.symbol}:{data.get('u', m.ts)}",
                                  self.account_id, event_time=m.ts)
            return 1
        if name.endswith("@aggTrade"):
            tr = md.normalize_agg_trade(data)
            self.producer.publish(keys.mkt_stream("perp", tr.symbol), tr, f"trade:{tr.symbol}:{tr.trade_id}",
                                  self.account_id, event_time=tr.ts)
            return 1
        if "@markPrice" in name:
            mp = md.normalize_mark_price(data)
            self.producer.publish(keys.mkt_stream("perp", mp.symbol), mp, f"mark:{mp.symbol}:{mp.ts}",
                                  self.account_id, event_time=mp.ts)
            if mp.funding_rate is not None and mp.next_funding_time:
                from chimera.schemas.messages import FundingEvent

                fe = FundingEvent(symbol=mp.symbol, funding_time=mp.next_funding_time, rate=mp.funding_rate)
                self.producer.publish(keys.mkt_stream("funding", mp.symbol), fe,
                                      f"funding:{mp.symbol}:{mp.next_funding_time}:{mp.ts}", self.account_id,
                                      event_time=mp.ts)
                return 2
            return 1
        if "@kline_" in name:
            k = md.normalize_kline(data)
            if not k.closed:
                return 0
            return self._on_closed_kline(k, arrived)
        return 0

    # --- closed bars: alignment, gaps, backfill ------------------------------------------------------

    def _on_closed_kline(self, k: Kline, arrived: float) -> int:
        if self.reference is None or k.symbol == self.reference:
            n = self._emit_bar(k)
            return n + self._release_held()
        self.held.setdefault(k.symbol, []).append((k, arrived))
        return self._release_held()

    def _release_held(self, force_older_than: float | None = None) -> int:
        n = 0
        ref_last = self.last_open.get(self.reference, -1) if self.reference else None
        now = time.monotonic()
        for sym, items in self.held.items():
            while items:
                k, arrived = items[0]
                ready = ref_last is None or ref_last >= k.open_time
                if not ready and force_older_than is not None and now - arrived >= force_older_than:
                    logger.warning("s1 {} bar {}: reference {} bar missing after {}s; publishing unaligned",
                                   sym, k.open_time, self.reference, force_older_than)
                    ready = True
                if not ready:
                    break
                items.pop(0)
                n += self._emit_bar(k)
        return n

    def _emit_bar(self, k: Kline) -> int:
        last = self.last_open.get(k.symbol)
        if last is not None and k.open_time <= last:
            return 0  # a replayed frame
        n = 0
        if last is not None and k.open_time - last > BAR_MS:
            n += self._backfill(k.symbol, last + BAR_MS, k.open_time)
        publish_closed_kline(self.r, k, self.clock.now_ms(), self.account_id)
        self.last_open[k.symbol] = k.open_time
        self.published += 1
        return n + 1

    def _backfill(self, symbol: str, start: int, end: int) -> int:
        self.gaps += 1
        missing = (end - start) // BAR_MS
        self._ops("DATA_GAP", {"symbol": symbol, "from_ms": str(start), "to_ms": str(end), "bars": str(missing)})
        got = []
        for attempt in range(5):
            try:
                got = md.fetch_klines(self.rest, symbol, start, end)
                break
            except Exception as exc:  # REST hiccup: back off and retry, then give up loudly
                logger.warning("s1 backfill {} attempt {}: {}", symbol, attempt + 1, exc)
                time.sleep(0.2 * 2 ** attempt)
        for k in got:
            bk = msgspec.structs.replace(k, closed=True, backfilled=True)
            publish_closed_kline(self.r, bk, self.clock.now_ms(), self.account_id)
            self.last_open[symbol] = bk.open_time
        self.backfilled += len(got)
        self._ops("BACKFILL_DONE", {"symbol": symbol, "from_ms": str(start), "to_ms": str(end),
                                    "bars": str(len(got)), "missing": str(missing - len(got))})
        return len(got)

    # --- ops / metrics -----------------------------------------------------------------------------------

    def _ops(self, kind: str, detail: dict[str, str]) -> None:
        key = f"{kind}:{detail.get('symbol', '')}:{detail.get('from_ms', '')}:{detail.get('count', '')}"
        self.producer.publish(keys.OPS_EVENTS, OpsEvent(kind=kind, actor="s1", detail=detail), key, self.account_id)
        logger.info("s1 {} {}", kind, detail)

    def _metrics(self, rate: float) -> None:
        now = self.clock.now_ms()
        self.producer.publish(keys.metrics_stream("s1.mkt_throughput"),
                              MetricEvent(name="s1.mkt_throughput", value=rate, ts=now), f"s1.tput:{now}")
        rtt = self.ws_rtt_ms()
        if rtt is not None:
            self.producer.publish(keys.metrics_stream("s1.ws_rtt"), MetricEvent(name="s1.ws_rtt", value=rtt, ts=now),
                                  f"s1.rtt:{now}")

    def ws_rtt_ms(self) -> float | None:
        if self._client is None or self._loop is None:
            return None
        started = time.perf_counter()
        try:
            self._loop.run(self._client.list_subscribe(), timeout=5)
        except Exception as exc:  # no socket right now: no sample
            logger.debug("s1 rtt probe: {}", exc)
            return None
        return (time.perf_counter() - started) * 1000

    def _watchdog(self) -> None:
        backoff = 0.5
        while not self._stop.wait(1.0):
            client = self._client
            alive = client is not None and any(getattr(c, "is_open", True) or getattr(c, "reconnect", False)
                                               for c in getattr(client, "connections", []))
            if alive or (client is not None and getattr(client, "reconnect_tasks", None)):
                backoff = 0.5
                continue
            self.on_status("DISCONNECTED", "SDK gave up reconnecting")
            logger.warning("s1 market streams down; rebuilding the client in {}s", backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, 30)
            try:
                self._connect()
                self.q.put(("reconnect", None, time.monotonic()))
            except Exception as exc:
                logger.warning("s1 reconnect failed: {}", exc)
