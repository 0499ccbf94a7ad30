"""Closed-bar store shared by S1 (writer) and S2 (reader of the rho reference).

S1 records every closed 1m bar in ``mkt:{bars}:<SYM>`` (ZSET, score = open time) *before* it
XADDs the Kline, and publishes a non-reference symbol's bar only after the reference's bar of
the same minute (time alignment, see docs/connectors.md). So when S2 handles ETH's bar t, BTC's
bar t is already in the store, whichever replica owns BTC's stream and however far it lags.

In the in-process runtime (recompute, tests) the store is a dict in ``ctx.services``.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import msgspec

from chimera.streams import keys

BARS_KEEP_MS = 3 * 24 * 3_600_000  # trim horizon of the ZSET


class StoredBar(msgspec.Struct, frozen=True, array_like=True):
    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(StoredBar)


def bar_member(bar: StoredBar) -> bytes:
    return _enc.encode(bar)


def record_bar(pipe_or_r, symbol: str, bar: StoredBar) -> None:
    """Add (idempotent: same member) and trim. Works on a pipeline or a client."""
    key = keys.mkt_bars(symbol)
    pipe_or_r.zremrangebyscore(key, bar.open_time, bar.open_time)  # a re-sent bar replaces the old one
    pipe_or_r.zadd(key, {bar_member(bar): bar.open_time})
    pipe_or_r.zremrangebyscore(key, 0, bar.open_time - BARS_KEEP_MS)


class _Memo:
    """Every stored bar of a symbol with ``lo < open_time <= hi``; ``start`` skips those already served."""

    def __init__(self, lo: int | None, hi: int, bars: list[tuple[int, float]]) -> None:
        self.lo, self.hi, self.bars, self.start = lo, hi, bars, 0

    def covers(self, after: int | None, upto: int) -> bool:
        return upto <= self.hi and (self.lo is None or (after is not None and after >= self.lo))

    def take(self, after: int | None, upto: int) -> list[tuple[int, float]]:
        i = self.start if after is None else bisect_right(self.bars, (after, math.inf), self.start)
        if after is not None:
            # The engine never asks for bars before its last reference bar again: forget them.
            self.lo, self.start = max(after, self.lo if self.lo is not None else after), i
            if i > 1024 and i > len(self.bars) // 2:
                self.bars, self.start, i = self.bars[i:], 0, 0
        return self.bars[i:bisect_right(self.bars, (upto, math.inf), i)]


class RedisBars:
    """Reads the store, with a memo of what it read: bars in the store are final.

    S1 writes a symbol's bars in open-time order (a gap is backfilled before the bar after it),
    so once bar t was read every bar up to t that will ever exist was there too: a read of
    ``(after, upto]`` inside the remembered range ``(lo, hi]`` needs no round trip.
    """

    def __init__(self, r) -> None:
        self.r = r
        self.memo: dict[str, _Memo] = {}

    def closes(self, symbol: str, after: int | None, upto: int) -> list[tuple[int, float]]:
        m = self.memo.get(symbol)
        if m is None or not m.covers(after, upto):
            bars = self._read(symbol, after)
            m = self.memo[symbol] = _Memo(after, bars[-1][0] if bars else (after if after is not None else -1), bars)
        return m.take(after, upto)

    def _read(self, symbol: str, after: int | None) -> list[tuple[int, float]]:
        raw = self.r.zrangebyscore(keys.mkt_bars(symbol), "-inf" if after is None else f"({after}", "+inf")
        return [(b.open_time, float(b.close)) for b in (_dec.decode(m) for m in raw)]


class MemoryBars:
    """The same reads over a dict symbol -> {open_time: close} (in-process runtime)."""

    def __init__(self, data: dict[str, dict[int, float]] | None = None) -> None:
        self.data = data if data is not None else {}

    def add(self, symbol: str, open_time: int, close: float) -> None:
        self.data.setdefault(symbol, {})[open_time] = close

    def closes(self, symbol: str, after: int | None, upto: int) -> list[tuple[int, float]]:
        d = self.data.get(symbol, {})
        return sorted((t, c) for t, c in d.items() if (after is None or t > after) and t <= upto)
