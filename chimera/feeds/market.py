"""S1 market data: the official SDK's WebSocket streams → normalized events on Redis, for one market
(``perp``: the USDT-M futures SDK; ``spot``: the spot SDK).

Threads: the SDK runs on its own asyncio loop (``sdk_loop.LoopThread``); its callbacks only enqueue the
raw frame with its arrival time. One publisher thread drains the queue in order (up to 1,000 frames a
batch) and writes the whole batch with one ``BatchWriter`` (bar store pipeline, then one XADD pipeline),
so every Redis write (and every REST call: backfill, depth snapshots) happens sequentially, off the loop.

* Streams per symbol: ``<s>@bookTicker``, ``<s>@aggTrade``, ``<s>@kline_1m``, ``<s>@depth@100ms``
  (diff depth, when ``depth_levels`` > 0), and on perp ``<s>@markPrice@1s``.
* Debounce: within one drained batch only the newest bookTicker and one ``DepthLevels`` (top
  ``depth_levels`` of the local order book, ``depth.py``) per symbol are published.
* Closed klines: ``closed_bars.py`` (alignment to the reference symbol on perp, gap → REST backfill).
* Reconnect: the SDK reconnects and resubscribes (``reconnect_delay``); its ``reconnect`` event
  publishes ``WS_RECONNECT``. A watchdog rebuilds the whole client with the backoff of ``backoff.py``
  when the SDK gave up (no open connection) or the first connect at start failed (the venue refused or
  dropped the socket): status DISCONNECTED with the error meanwhile, never an exit.
* Metrics on ``metrics:events:s1.mkt_throughput`` (events/s published) and
  ``metrics:events:s1.ws_rtt`` (LIST_SUBSCRIPTIONS request → reply over the socket, ms), labelled
  with the market.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from loguru import logger

from chimera.feeds.backoff import Backoff
from chimera.feeds.closed_bars import ClosedBars
from chimera.feeds.depth import DepthBooks
from chimera.feeds.publish import BatchWriter
from chimera.feeds.sdk_loop import LoopThread
from chimera.schemas.messages import FundingEvent, MetricEvent, OpsEvent
from chimera.streams import keys
from chimera.venues.binance import market_data as md

MAX_BATCH = 1000


def sdk_streams_client(market: str, ws_url: str, reconnect_delay_ms: int):
    """The official SDK's WebSocket streams client for ``market`` (perp: USDT-M futures, spot: spot)."""
    if market == "spot":
        from binance_sdk_spot.spot import ConfigurationWebSocketStreams, Spot

        cfg = ConfigurationWebSocketStreams(stream_url=ws_url, reconnect_delay=reconnect_delay_ms)
        return Spot(config_ws_streams=cfg).websocket_streams
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationWebSocketStreams,
        DerivativesTradingUsdsFutures,
    )

    cfg = ConfigurationWebSocketStreams(stream_url=ws_url, reconnect_delay=reconnect_delay_ms)
    return DerivativesTradingUsdsFutures(config_ws_streams=cfg).websocket_streams


async def close_quietly(client) -> None:
    """Close an SDK client that may hold no connection (a connect that failed half-way)."""
    try:
        await client.close_connection(close_session=True)
    except Exception as exc:  # nothing was open: nothing to close
        logger.debug("s1: closing a failed SDK client: {}", exc)


class MarketDataConnector:
    def __init__(self, *, r, clock, ws_url: str, rest, symbols: list[str], market: str = "perp",
                 reference: str = "BTCUSDT", depth_levels: int = 20, depth_stream: str = "depth@100ms",
                 reconnect_delay_ms: int = 500, align_wait_s: float = 2.0, metrics_every_s: float = 10.0,
                 account_id: str = "main", on_status: Callable[[str, str], None] | None = None,
                 depth_snapshot: Callable[[str], dict] | None = None) -> None:
        """``depth_snapshot(symbol)``: where order book snapshots come from (default: the REST order book;
        a replay of a recording passes the recorded one)."""
        if market not in ("perp", "spot"):
            raise ValueError(f"market must be perp or spot, not {market!r}")
        self.r = r
        self.clock = clock
        self.market = market
        self.ws_url = ws_url
        self.rest = rest
        self.symbols = [s.upper() for s in symbols]
        self.depth_stream = depth_stream
        self.reconnect_delay_ms = reconnect_delay_ms
        self.align_wait_s = align_wait_s
        self.metrics_every_s = metrics_every_s
        self.account_id = account_id
        self.on_status = on_status or (lambda status, err: None)
        self.writer = BatchWriter(r, clock, account_id)
        ref = reference.upper() if market == "perp" and reference.upper() in self.symbols else None
        self.bars = ClosedBars(writer=self.writer, ops=self._ops, reference=ref,
                               fetch=lambda s, start, end: md.fetch_klines(rest, s, start, end, market=market))
        self.depth = DepthBooks(market=market, symbols=self.symbols, writer=self.writer, ops=self._ops,
                                levels=depth_levels,
                                fetch_snapshot=depth_snapshot or (lambda s: md.depth_snapshot(rest, s, market)),
                                ) if depth_levels else None
        self.q: queue.Queue = queue.Queue()
        self.reconnects = 0
        self._client = None
        self._loop: LoopThread | None = None
        self._stop = threading.Event()

    @property
    def gaps(self) -> int:
        return self.bars.gaps

    @property
    def backfilled(self) -> int:
        return self.bars.backfilled

    # --- lifecycle -----------------------------------------------------------------------------

    def stream_names(self) -> list[str]:
        out = []
        for s in self.symbols:
            low = s.lower()
            out += [f"{low}@bookTicker", f"{low}@aggTrade", f"{low}@kline_1m"]
            if self.market == "perp":
                out.append(f"{low}@markPrice@1s")
            if self.depth is not None:
                out.append(f"{low}@{self.depth_stream}")
        return out

    def start(self) -> None:
        self._loop = LoopThread(f"s1-ws-{self.market}")
        try:
            self._connect()
        except Exception as exc:  # the watchdog retries with backoff: S1 must not exit on a refused connect
            logger.warning("s1 {} market streams: connecting at start failed ({}); retrying", self.market, exc)
            self.on_status("DISCONNECTED", f"connect failed: {exc}")
        self._loop.spawn(self._publisher, f"s1-publish-{self.market}")
        self._loop.spawn(self._watchdog, f"s1-watchdog-{self.market}")

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.shutdown(self._stop, self._client, f"s1 {self.market}")

    def _connect(self) -> None:
        assert self._loop is not None
        self.on_status("CONNECTING", "")
        client = sdk_streams_client(self.market, self.ws_url, self.reconnect_delay_ms)
        names = self.stream_names()

        async def go():
            try:
                await client.create_connection()
                await client.subscribe(streams=names)
            except BaseException:
                await close_quietly(client)  # a half-open client would leak its session
                raise
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
                while len(batch) < MAX_BATCH:
                    batch.append(self.q.get_nowait())
            except queue.Empty:
                pass
            try:
                count_since += self.publish_batch(batch)
            except Exception as exc:  # Redis or REST trouble: log and keep the loop alive
                logger.exception("s1 {} publisher: {}", self.market, exc)
                self._stop.wait(0.2)
            now = time.monotonic()
            if now - last_metrics >= self.metrics_every_s:
                self._metrics(count_since / (now - last_metrics))
                last_metrics, count_since = now, 0

    def publish_batch(self, batch: list) -> int:
        """Normalize one drained batch of ``(kind, frame, arrived)`` and write it. Returns events published."""
        newest_book: dict[str, int] = {}  # debounce: the newest bookTicker per stream of this batch
        for i, (kind, frame, _) in enumerate(batch):
            if kind == "frame" and isinstance(frame, dict) and str(frame.get("stream", "")).endswith("@bookTicker"):
                newest_book[frame["stream"]] = i
        for i, (kind, frame, arrived) in enumerate(batch):
            if kind == "reconnect":
                self.reconnects += 1
                self._ops("WS_RECONNECT", {"url": self.ws_url, "market": self.market, "count": str(self.reconnects)})
                self.on_status("CONNECTED", "reconnected after a drop")
                continue
            if not isinstance(frame, dict) or "stream" not in frame:
                continue
            name, data = frame["stream"], frame.get("data") or {}
            if name.endswith("@bookTicker") and newest_book.get(name) != i:
                continue
            try:
                self._on_data(name, data, arrived)
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # one bad frame, not the batch
                logger.warning("s1 {} dropped a malformed {} frame ({!r}): {}", self.market, name, exc, data)
        self.bars.release(force_older_than=self.align_wait_s)
        if self.depth is not None:
            self.depth.publish()
        return self.writer.flush()

    def _on_data(self, name: str, data: dict, arrived: float) -> None:
        stream = keys.mkt_stream(self.market, str(data.get("s", "")).upper())
        if name.endswith("@bookTicker"):
            m = md.normalize_book_ticker(data, self.market)
            self.writer.add(stream, m, f"book:{self.market}:{m.symbol}:{data.get('u', m.ts)}", event_time=m.ts)
        elif name.endswith("@aggTrade"):
            tr = md.normalize_agg_trade(data, self.market)
            self.writer.add(stream, tr, f"trade:{self.market}:{tr.symbol}:{tr.trade_id}", event_time=tr.ts)
        elif "@depth" in name:
            if self.depth is not None:
                self.depth.on_diff(data)
        elif "@markPrice" in name:
            mp = md.normalize_mark_price(data)
            self.writer.add(stream, mp, f"mark:{mp.symbol}:{mp.ts}", event_time=mp.ts)
            if mp.funding_rate is not None and mp.next_funding_time:
                fe = FundingEvent(symbol=mp.symbol, funding_time=mp.next_funding_time, rate=mp.funding_rate)
                self.writer.add(keys.mkt_stream("funding", mp.symbol), fe,
                                f"funding:{mp.symbol}:{mp.next_funding_time}:{mp.ts}", event_time=mp.ts)
        elif "@kline_" in name:
            k = md.normalize_kline(data, self.market)
            if k.closed:
                self.bars.on_closed(k, arrived)

    # --- ops / metrics -----------------------------------------------------------------------------------

    def _ops(self, kind: str, detail: dict[str, str]) -> None:
        key = f"{kind}:{self.market}:{detail.get('symbol', '')}:{detail.get('from_ms', '')}:{detail.get('count', '')}"
        self.writer.add(keys.OPS_EVENTS, OpsEvent(kind=kind, actor="s1", detail=detail), key)
        logger.info("s1 {} {}", kind, detail)

    def _metrics(self, rate: float) -> None:
        now = self.clock.now_ms()
        labels = {"market": self.market}
        self.writer.add(keys.metrics_stream("s1.mkt_throughput"),
                        MetricEvent(name="s1.mkt_throughput", value=rate, labels=labels, ts=now),
                        f"s1.tput:{self.market}:{now}")
        rtt = self.ws_rtt_ms()
        if rtt is not None:
            self.writer.add(keys.metrics_stream("s1.ws_rtt"),
                            MetricEvent(name="s1.ws_rtt", value=rtt, labels=labels, ts=now),
                            f"s1.rtt:{self.market}:{now}")
        try:
            self.writer.flush()
        except Exception as exc:  # metrics are best effort; the next period tries again
            logger.warning("s1 metrics: {}", exc)

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
        backoff = Backoff()
        while not self._stop.wait(1.0):
            client = self._client
            alive = client is not None and any(getattr(c, "is_open", True) or getattr(c, "reconnect", False)
                                               for c in getattr(client, "connections", []))
            if alive or (client is not None and getattr(client, "reconnect_tasks", None)):
                backoff.reset()
                continue
            delay = backoff.next()
            if client is not None:
                self.on_status("DISCONNECTED", "SDK gave up reconnecting")
            logger.warning("s1 {} market streams down; rebuilding the client in {}s", self.market, delay)
            if self._stop.wait(delay):
                return
            try:
                self._connect()
                self.q.put(("reconnect", None, time.monotonic()))
            except Exception as exc:
                logger.warning("s1 {} reconnect failed: {}", self.market, exc)
                self.on_status("DISCONNECTED", f"connect failed: {exc}")
