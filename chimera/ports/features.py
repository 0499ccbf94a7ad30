"""S2's shared state: the feature-engine cache and the closed-bar store, behind one port.

**Engine cache** (``feat:{cache}:<SYM>`` blob + ``feat:{cache}:<SYM>:seq``). S2 keeps each symbol's
engine in replica memory and writes every engine a read batch changed in one transaction before
the batch is acked (``save``); ``load`` answers the cache's seq and, only when it differs from the
seq the replica holds, the blob: a replica whose lease moved away and back reloads what the other
owner wrote, in one round trip. All ``feat:{cache}`` keys share the ``{cache}`` tag, so the
transaction and the load script touch one Redis Cluster slot.

**Bar store** (``mkt:{bars}:<SYM>``, ZSET scored by open time). S1 records every closed 1m bar
*before* it XADDs the Kline, and publishes a non-reference symbol's bar only after the reference's
bar of the same minute, so when S2 handles ETH's bar t, BTC's bar t is already there (the rho
reference, see docs/connectors.md). ``closes`` reads it; ``bar_closed`` is S2 telling the store
it saw a closed bar: a no-op on Redis (S1 wrote it first), the recording itself in memory, where
no S1 runs (recompute, backtests).

``RedisFeatureState`` is production; ``MemoryFeatureState`` the in-process runtime's, same answers.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from typing import Protocol

import msgspec

from chimera.streams import keys
from chimera.streams.redis import retry_redis

BARS_KEEP_MS = 3 * 24 * 3_600_000  # trim horizon of the bar store


class FeatureState(Protocol):
    def load(self, symbol: str, known_seq: int) -> tuple[int, bytes | None]:
        """``(seq, blob)``: the cache's seq (0: never written) and its blob when ``seq`` differs
        from ``known_seq`` (else None: the caller's engine is current)."""

    def save(self, blobs: Mapping[str, bytes]) -> dict[str, int]:
        """Write every symbol's blob in one transaction; answers each symbol's new seq."""

    def closes(self, symbol: str, after: int | None, upto: int) -> list[tuple[int, float]]:
        """``(open_time, close)`` of the stored bars with ``after < open_time <= upto``, in order."""

    def bar_closed(self, symbol: str, open_time: int, close: float) -> None: ...


# --- bar store records (S1 writes them; the Redis reader decodes them) -----------------------------


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
    """S1's write: add (idempotent: same member) and trim. Works on a pipeline or a client."""
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


# KEYS: seq, blob (one {cache} slot) ; ARGV: the seq the caller holds
_LOAD = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq == 0 or seq == tonumber(ARGV[1]) then return {seq} end
return {seq, redis.call('GET', KEYS[2])}
"""


class RedisFeatureState:
    """Reads the bar store with a memo of what it read: bars in the store are final.

    S1 writes a symbol's bars in open-time order (a gap is backfilled before the bar after it),
    so once bar t was read every bar up to t that will ever exist was there too: a read of
    ``(after, upto]`` inside the remembered range ``(lo, hi]`` needs no round trip.
    """

    def __init__(self, r) -> None:
        self.r = r
        self._memo: dict[str, _Memo] = {}

    def load(self, symbol: str, known_seq: int) -> tuple[int, bytes | None]:
        got = self.r.eval(_LOAD, 2, keys.feat_cache_seq(symbol), keys.feat_cache(symbol), int(known_seq))
        return int(got[0]), (got[1] if len(got) > 1 else None) or None

    @retry_redis
    def save(self, blobs: Mapping[str, bytes]) -> dict[str, int]:
        if not blobs:
            return {}
        pipe = self.r.pipeline(transaction=True)  # every feat:{cache} key shares the {cache} slot
        for symbol, blob in blobs.items():
            pipe.set(keys.feat_cache(symbol), blob)
            pipe.incr(keys.feat_cache_seq(symbol))
        replies = pipe.execute()
        return {symbol: int(seq) for symbol, seq in zip(blobs, replies[1::2], strict=True)}

    def closes(self, symbol: str, after: int | None, upto: int) -> list[tuple[int, float]]:
        m = self._memo.get(symbol)
        if m is None or not m.covers(after, upto):
            bars = self._read(symbol, after)
            m = self._memo[symbol] = _Memo(after, bars[-1][0] if bars else (after if after is not None else -1), bars)
        return m.take(after, upto)

    def _read(self, symbol: str, after: int | None) -> list[tuple[int, float]]:
        raw = self.r.zrangebyscore(keys.mkt_bars(symbol), "-inf" if after is None else f"({after}", "+inf")
        return [(b.open_time, float(b.close)) for b in (_dec.decode(m) for m in raw)]

    def bar_closed(self, symbol: str, open_time: int, close: float) -> None:
        """S1 recorded the bar before publishing it (see the module doc)."""


class MemoryFeatureState:
    """The same answers over dicts (in-process runtime: recompute, backtests, unit tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._bars: dict[str, list[tuple[int, float]]] = {}  # sorted by open time

    def load(self, symbol: str, known_seq: int) -> tuple[int, bytes | None]:
        with self._lock:
            seq, blob = self._cache.get(symbol, (0, None))
        return seq, (blob if seq and seq != known_seq else None)

    def save(self, blobs: Mapping[str, bytes]) -> dict[str, int]:
        out = {}
        with self._lock:
            for symbol, blob in blobs.items():
                seq = self._cache.get(symbol, (0, b""))[0] + 1
                self._cache[symbol] = (seq, bytes(blob))
                out[symbol] = seq
        return out

    def closes(self, symbol: str, after: int | None, upto: int) -> list[tuple[int, float]]:
        with self._lock:
            bars = self._bars.get(symbol, [])
            lo = 0 if after is None else bisect_right(bars, (after, math.inf))
            return bars[lo:bisect_right(bars, (upto, math.inf), lo)]

    def bar_closed(self, symbol: str, open_time: int, close: float) -> None:
        with self._lock:
            bars = self._bars.setdefault(symbol, [])
            if not bars or bars[-1][0] < open_time:  # the usual case: bars come in order
                bars.append((open_time, close))
            else:
                i = bisect_left(bars, (open_time, -math.inf))
                if i < len(bars) and bars[i][0] == open_time:
                    bars[i] = (open_time, close)  # a re-sent bar replaces the old one
                else:
                    bars.insert(i, (open_time, close))
            # record_bar's trim: without it a year's backtest kept every bar (~120 MB for two symbols).
            if bars[0][0] <= open_time - BARS_KEEP_MS:
                del bars[:bisect_right(bars, (open_time - BARS_KEEP_MS, math.inf))]
