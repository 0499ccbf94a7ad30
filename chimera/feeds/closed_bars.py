"""S1 closed bars: time alignment to the reference symbol, gap detection, REST backfill.

* Alignment (perp): a non-reference symbol's bar is held until the reference (BTC) bar of the
  same minute is out (at most the connector's ``align_wait_s``, then published unaligned with a warning), so S2
  always finds the reference in the bar store. Spot has no reference: bars go out as they close.
* Gap: a bar whose open time jumps past the last published one + 1 bar → ``DATA_GAP`` on
  ops:events, the missing bars from REST (5 tries with backoff) published in order with
  ``backfilled=True``, then ``BACKFILL_DONE`` (``missing`` = bars REST could not supply).

Everything goes through the connector's ``BatchWriter``, so a bar is in the store before any
later entry is on a stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from loguru import logger

from chimera.feeds.publish import BatchWriter
from chimera.schemas.messages import Kline

BAR_MS = 60_000


class ClosedBars:
    def __init__(self, *, writer: BatchWriter, fetch: Callable[[str, int, int], list[Kline]],
                 ops: Callable[[str, dict[str, str]], None], reference: str | None) -> None:
        self.writer = writer
        self.fetch = fetch
        self.ops = ops
        self.reference = reference
        self.last_open: dict[str, int] = {}  # last published closed bar per symbol
        self.held: dict[str, list[tuple[Kline, float]]] = {}
        self.gaps = 0
        self.backfilled = 0

    def on_closed(self, k: Kline, arrived: float) -> int:
        if self.reference is None or k.symbol == self.reference:
            return self._emit(k) + self.release()
        self.held.setdefault(k.symbol, []).append((k, arrived))
        return self.release()

    def release(self, force_older_than: float | None = None) -> int:
        """Publish held bars whose reference bar is out (or that waited ``force_older_than`` s)."""
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
                n += self._emit(k)
        return n

    def _emit(self, k: Kline) -> int:
        last = self.last_open.get(k.symbol)
        if last is not None and k.open_time <= last:
            return 0  # a replayed frame
        n = 0
        if last is not None and k.open_time - last > BAR_MS:
            n += self._backfill(k.symbol, last + BAR_MS, k.open_time)
        self.writer.add_closed_bar(k)
        self.last_open[k.symbol] = k.open_time
        return n + 1

    def _backfill(self, symbol: str, start: int, end: int) -> int:
        self.gaps += 1
        missing = (end - start) // BAR_MS
        self.ops("DATA_GAP", {"symbol": symbol, "from_ms": str(start), "to_ms": str(end), "bars": str(missing)})
        got: list[Kline] = []
        for attempt in range(5):
            try:
                got = self.fetch(symbol, start, end)
                break
            except Exception as exc:  # REST hiccup: back off and retry, then give up loudly
                logger.warning("s1 backfill {} attempt {}: {}", symbol, attempt + 1, exc)
                time.sleep(0.2 * 2 ** attempt)
        for k in got:
            self.writer.add_closed_bar(msgspec.structs.replace(k, closed=True, backfilled=True))
            self.last_open[symbol] = k.open_time
        self.backfilled += len(got)
        self.ops("BACKFILL_DONE", {"symbol": symbol, "from_ms": str(start), "to_ms": str(end),
                                   "bars": str(len(got)), "missing": str(missing - len(got))})
        return len(got)
