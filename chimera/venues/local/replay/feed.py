"""Build one time-ordered event list from several real data sources."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

from .. import loaders
from ..engine.market import MarketEvent

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass
class DataSpec:
    """One source. kind: ft_klines | ft_funding | vision_klines | vision_funding | vision_aggtrades | ws."""

    kind: str
    path: str
    market: str = "futures"
    symbol: str = ""
    interval: str = "1m"

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        """`kind:market:symbol:path[:interval]`, e.g. `ft_klines:futures:BTCUSDT:/data/BTC.feather`."""
        kind, market, symbol, rest = text.split(":", 3)
        interval = "1m"
        if rest.rsplit(":", 1)[-1] in loaders.INTERVAL_MS:
            rest, interval = rest.rsplit(":", 1)
        return cls(kind=kind, path=rest, market=market, symbol=symbol, interval=interval)


@dataclass
class Feed:
    events: list[MarketEvent]
    klines: dict[tuple[str, str, str], list] = field(default_factory=dict)
    funding: dict[str, list[MarketEvent]] = field(default_factory=dict)
    cursor: int = 0

    def __len__(self) -> int:
        return len(self.events)

    def peek(self) -> MarketEvent | None:
        return self.events[self.cursor] if self.cursor < len(self.events) else None

    def pop(self) -> MarketEvent:
        ev = self.events[self.cursor]
        self.cursor += 1
        return ev


def _load(spec: DataSpec, klines: list | None = None, lo: int | None = None,
          hi: int | None = None) -> tuple[list[MarketEvent], list | None]:
    """``klines``: already loaded bars of a kline spec; only bars overlapping [lo, hi] become events."""
    if spec.kind in ("ft_klines", "vision_klines"):
        if klines is None:
            load = loaders.load_freqtrade_klines if spec.kind == "ft_klines" else loaders.load_vision_klines
            klines = load(Path(spec.path))
        width = loaders.INTERVAL_MS.get(spec.interval, 60_000)
        inside = [k for k in klines if (lo is None or k[0] + width > lo) and (hi is None or k[0] <= hi)]
        return list(loaders.kline_events(inside, spec.market, spec.symbol, spec.interval)), klines
    if spec.kind == "ft_funding":
        return loaders.load_freqtrade_funding(Path(spec.path), spec.symbol), None
    if spec.kind == "vision_funding":
        return loaders.load_vision_funding(Path(spec.path), spec.symbol), None
    if spec.kind == "vision_aggtrades":
        return loaders.load_vision_aggtrades(Path(spec.path), spec.market, spec.symbol), None
    if spec.kind == "ws":
        return loaders.load_ws_recording(Path(spec.path), spec.market), None
    raise ValueError(f"unknown data kind {spec.kind!r}")


def build_feed(specs: list[DataSpec], start_ms: int | None = None, end_ms: int | None = None,
               klines_of: dict[int, list] | None = None) -> Feed:
    """Merge sources by (time, source order, position) so equal timestamps replay deterministically.

    ``klines_of``: bars already loaded, by the spec's index in ``specs`` (a caller that checked them).
    """
    streams = []
    klines = {}
    funding: dict[str, list[MarketEvent]] = {}
    for idx, spec in enumerate(specs):
        events, kl = _load(spec, (klines_of or {}).get(idx), start_ms, end_ms)
        if kl is not None:
            klines[(spec.market, spec.symbol, spec.interval)] = kl
        if spec.kind.endswith("funding"):
            funding.setdefault(spec.symbol, []).extend(events)
        streams.append([((ev.time, idx, i), ev) for i, ev in enumerate(events)])
    merged = [ev for _, ev in heapq.merge(*streams, key=lambda pair: pair[0])]
    if start_ms is None:
        # Funding series usually start long before the price data; settlements with no price are no-ops.
        priced = [ev.time for ev in merged if ev.kind != "funding"]
        start_ms = min(priced) if priced else None
    if start_ms is not None or end_ms is not None:
        lo = start_ms or 0
        hi = end_ms if end_ms is not None else 1 << 62
        merged = [ev for ev in merged if lo <= ev.time <= hi]
    for i, ev in enumerate(merged):
        ev.seq = i
    return Feed(events=merged, klines=klines, funding=funding)


def sample_specs() -> list[DataSpec]:
    """The real sample shipped in the repo (see data/README.md)."""
    out = []
    for coin in ("BTC", "ETH"):
        sym = f"{coin}USDT"
        out.append(DataSpec("ft_klines", str(SAMPLE_DIR / f"{coin}_USDT_USDT-1m-futures.feather"), "futures", sym))
        out.append(DataSpec("ft_funding", str(SAMPLE_DIR / f"{coin}_USDT_USDT-8h-funding_rate.feather"), "futures", sym))
    return out
