"""Closed-bar store shared by S1 (writer) and S2 (reader of the rho reference).

S1 records every closed 1m bar in ``mkt:{bars}:<SYM>`` (ZSET, score = open time) *before* it
XADDs the Kline, and publishes a non-reference symbol's bar only after the reference's bar of
the same minute (time alignment, see docs/connectors.md). So when S2 handles ETH's bar t, BTC's
bar t is already in the store, whichever replica owns BTC's stream and however far it lags.

In the in-process runtime (recompute, tests) the store is a dict in ``ctx.services``.
"""

from __future__ import annotations

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


class RedisBars:
    def __init__(self, r) -> None:
        self.r = r

    def closes(self, symbol: str, after: int | None, upto: int) -> list[tuple[int, float]]:
        lo = "-inf" if after is None else f"({after}"
        raw = self.r.zrangebyscore(keys.mkt_bars(symbol), lo, upto)
        out = [_dec.decode(m) for m in raw]
        return [(b.open_time, float(b.close)) for b in out]


class MemoryBars:
    """The same reads over a dict symbol -> {open_time: close} (in-process runtime)."""

    def __init__(self, data: dict[str, dict[int, float]] | None = None) -> None:
        self.data = data if data is not None else {}

    def add(self, symbol: str, open_time: int, close: float) -> None:
        self.data.setdefault(symbol, {})[open_time] = close

    def closes(self, symbol: str, after: int | None, upto: int) -> list[tuple[int, float]]:
        d = self.data.get(symbol, {})
        return sorted((t, c) for t, c in d.items() if (after is None or t > after) and t <= upto)
