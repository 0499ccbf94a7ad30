"""S1 depth: one local order book per symbol from the diff depth stream + REST snapshots, and the
top-N levels published (debounced) as ``DepthLevels`` on ``mkt:events:{perp|spot}:<SYM>``.

The procedure (``chimera/venues/binance/order_book.py`` has the sequencing rules): diff events
of a symbol without a book are buffered and a snapshot is fetched (``GET /fapi/v1/depth`` or
``/api/v3/depth``, ``snapshot_limit`` levels); buffered events older than the snapshot are dropped
and the rest applied. If the snapshot is older than the buffered events (they do not link), a
newer one is fetched. A sequence gap while live discards the book, publishes ``DEPTH_RESYNC`` on
ops:events and starts again with the event that showed the gap. Runs on S1's publisher thread,
so the REST call pauses that thread; diff events queue meanwhile and link up afterwards.

Debounce: a symbol's top ``levels`` are published once per drained batch, after its last
event in the batch, with the exchange time of that event.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger

from chimera.feeds.publish import BatchWriter
from chimera.schemas.messages import DepthLevels
from chimera.streams import keys
from chimera.venues.binance.order_book import OrderBook, SequenceGap

SNAPSHOT_TRIES = 5  # snapshots older than the buffered events, fetched again at once
RETRY_AFTER_S = 1.0  # after a failed snapshot request
MAX_BUFFERED = 5_000  # diff events kept while no snapshot links them


class DepthBooks:
    def __init__(self, *, market: str, symbols: list[str], fetch_snapshot: Callable[[str], dict],
                 writer: BatchWriter, ops: Callable[[str, dict[str, str]], None], levels: int = 20) -> None:
        self.market = market
        self.fetch_snapshot = fetch_snapshot
        self.writer = writer
        self.ops = ops
        self.levels = levels
        self.books = {s: OrderBook(s, market) for s in symbols}
        self.pending: dict[str, list[dict]] = {s: [] for s in symbols}
        self.changed: dict[str, dict] = {}  # symbol -> last applied event of this batch
        self.retry_at: dict[str, float] = {}
        self.resyncs = 0

    def on_diff(self, d: dict) -> None:
        sym = d.get("s", "")
        book = self.books.get(sym)
        if book is None:
            return
        if not book.loaded:
            buffered = self.pending[sym]
            buffered.append(d)
            del buffered[:-MAX_BUFFERED]
            self._sync(sym)
            return
        try:
            if book.apply(d):
                self.changed[sym] = d
        except SequenceGap as gap:
            self._resync(sym, str(gap), d)

    def publish(self) -> int:
        """Top-N of every book changed since the last call (once per drained batch)."""
        n = 0
        for sym, d in self.changed.items():
            book = self.books[sym]
            if not book.loaded:
                continue  # resyncing: nothing trustworthy to show yet
            bids, asks = book.top(self.levels)
            if not bids or not asks:
                continue
            msg = DepthLevels(market=self.market, symbol=sym, bids=bids, asks=asks,
                              ts=int(d.get("T") or d.get("E") or 0))
            self.writer.add(keys.mkt_stream(self.market, sym), msg, f"depth:{self.market}:{sym}:{book.last_id}",
                            event_time=msg.ts)
            n += 1
        self.changed = {}
        return n

    def _resync(self, sym: str, reason: str, d: dict) -> None:
        self.resyncs += 1
        book = self.books[sym]
        logger.warning("s1 {} depth {}: {}; resyncing from a new snapshot", self.market, sym, reason)
        self.ops("DEPTH_RESYNC", {"symbol": sym, "market": self.market, "reason": reason,
                                  "last_update_id": str(book.last_id), "count": str(self.resyncs)})
        book.reset()
        self.changed.pop(sym, None)
        self.pending[sym] = [d]
        self._sync(sym)

    def _sync(self, sym: str) -> None:
        """Snapshot + the buffered events; a snapshot older than them is fetched again."""
        book = self.books[sym]
        if time.monotonic() < self.retry_at.get(sym, 0.0):
            return
        for _ in range(SNAPSHOT_TRIES):
            try:
                snap = self.fetch_snapshot(sym)
            except Exception as exc:  # REST trouble: events keep buffering, a later one retries
                logger.warning("s1 {} depth snapshot {}: {}", self.market, sym, exc)
                self.retry_at[sym] = time.monotonic() + RETRY_AFTER_S
                return
            book.load(snap)
            try:
                for d in self.pending[sym]:
                    book.apply(d)
            except SequenceGap as gap:  # the snapshot predates the buffered events
                logger.info("s1 {} depth {}: snapshot {} too old ({}); fetching again", self.market, sym,
                            book.last_id, gap)
                book.reset()
                continue
            # The book is current as of the newest buffered event (or newer): publish it.
            self.changed[sym] = self.pending[sym][-1]
            self.pending[sym] = []
            return
        self.retry_at[sym] = time.monotonic() + RETRY_AFTER_S
