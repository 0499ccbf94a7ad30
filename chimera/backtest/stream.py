"""The replay feed generated while it is consumed: a year of 1m bars of two symbols never sits in memory.

The venue's ``replay.build_feed`` materialises every market event (four per kline, each with its kline
frame), which is fine for a week and gigabytes for a year. ``StreamFeed`` has the same interface
(``peek``/``pop``/``len``/``cursor``, ``funding``) and the same order: the sources are merged by
(time, source order, position), each kline becomes the same four path events (``loaders.kline_events``),
and klines are read file by file, row by row (a feather file as its float columns, converted per row
exactly as the venue's loader converts them). Funding and aggTrades files are small and loaded whole.

``iter_klines`` is also what ``data.load`` checks the files with (bad rows by line, gaps, duplicates), so a
file is read once to check and once to replay, and only its first/last bar and count are kept in between.
``klines`` (the venue's REST klines endpoint) is empty: the backtest's handlers (S2 → S6) never ask for it.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from operator import itemgetter
from pathlib import Path

from chimera.venues.local import loaders
from chimera.venues.local.engine.market import MarketEvent
from chimera.venues.local.replay.feed import DataSpec

Kline = loaders.Kline


class RowError(ValueError):
    """A row that is not a kline: ``line`` is its 1-based line (CSV) or row (freqtrade) number."""

    def __init__(self, line: int, msg: str) -> None:
        super().__init__(msg)
        self.line = line


def iter_klines(spec: DataSpec, lo: int | None = None, hi: int | None = None) -> Iterator[Kline]:
    """The spec's bars in file order, one at a time; with ``lo``/``hi``, only bars opening in [lo, hi] (the
    others are skipped before their prices are converted: a week out of a year costs a week)."""
    return (k for _, k in numbered_klines(spec, lo, hi))


def numbered_klines(spec: DataSpec, lo: int | None = None, hi: int | None = None) -> Iterator[tuple[int, Kline]]:
    """``iter_klines`` with each bar's line (CSV, header included) or row (freqtrade) number."""
    path = Path(spec.path)
    lo = -(1 << 62) if lo is None else lo
    hi = 1 << 62 if hi is None else hi
    if spec.kind == "vision_klines":
        yield from _vision(path, lo, hi)
    elif path.suffix == ".feather":
        import pandas as pd

        df = pd.read_feather(path, columns=["date", "open", "high", "low", "close", "volume"])
        ts = (df["date"].astype("int64") // 1_000_000).to_numpy()
        cols = [df[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
        del df
        # pyarrow's allocator keeps the freed read buffers for reuse: ~55 MB for a year of two symbols
        # read to check, then again to replay, that would sit in the 500 MB budget (issue 12 item 7).
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
        for i in range(len(ts)):
            t = int(ts[i])
            if lo <= t <= hi:
                yield i + 1, (t, *(Decimal(repr(float(c[i]))) for c in cols))  # as load_freqtrade_klines
    else:
        with loaders._open_text(path) as fh:
            rows = json.load(fh)
        for n, r in enumerate(rows, 1):
            try:
                t = loaders.to_ms(r[0])
                if lo <= t <= hi:
                    yield n, (t, *(Decimal(str(x)) for x in r[1:6]))
            except Exception as exc:  # noqa: BLE001 - names the row
                raise RowError(n, f"row {n}: {exc}: {str(r)[:80]!r}") from None


def _vision(path: Path, lo: int, hi: int) -> Iterator[tuple[int, Kline]]:
    with loaders._open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            row = line.strip().split(",")
            if not row or not row[0].strip().lstrip("-").isdigit():
                if lineno == 1:
                    continue  # header
                raise RowError(lineno, f"line {lineno}: not a kline row: {line.strip()[:80]!r}")
            try:
                if not lo <= loaders.to_ms(row[0]) <= hi:
                    continue
                yield lineno, loaders.load_vision_klines_row(row)
            except Exception as exc:  # noqa: BLE001
                raise RowError(lineno, f"line {lineno}: {exc}: {line.strip()[:80]!r}") from None


def _keyed(idx: int, events: Iterator[MarketEvent]) -> Iterator[tuple[tuple[int, int, int], MarketEvent]]:
    for i, ev in enumerate(events):
        yield (ev.time, idx, i), ev


def _window(events: Iterator[MarketEvent], lo: int, hi: int) -> Iterator[MarketEvent]:
    for ev in events:
        if ev.time > hi:
            return
        if ev.time >= lo:
            yield ev


def _kline_source(specs: list[DataSpec], lo: int, hi: int) -> Callable[[], Iterator[MarketEvent]]:
    """One symbol's files in time order, as path events inside [lo, hi]."""
    def events() -> Iterator[MarketEvent]:
        for spec in specs:
            width = loaders.INTERVAL_MS.get(spec.interval, 60_000)
            inside = iter_klines(spec, lo - width + 1, hi)  # every bar overlapping [lo, hi]
            yield from _window(loaders.kline_events(inside, spec.market, spec.symbol, spec.interval), lo, hi)
    return events


class StreamFeed:
    def __init__(self, sources: list[Callable[[], Iterator[MarketEvent]]], total: int,
                 funding: dict[str, list[MarketEvent]]) -> None:
        self._merged = heapq.merge(*(_keyed(i, src()) for i, src in enumerate(sources)), key=itemgetter(0))
        self._next: MarketEvent | None = None
        self._done = False
        self.total = total
        self.cursor = 0
        self.funding = funding
        self.klines: dict = {}

    def __len__(self) -> int:
        return self.total

    def peek(self) -> MarketEvent | None:
        if self._next is None and not self._done:
            got = next(self._merged, None)
            if got is None:
                self._done = True
            else:
                self._next = got[1]
        return self._next

    def pop(self) -> MarketEvent:
        ev = self.peek()
        if ev is None:
            raise IndexError("the feed is exhausted")
        self._next = None
        ev.seq = self.cursor
        self.cursor += 1
        return ev


def stream_feed(specs: list[DataSpec], lo: int, hi: int, kline_events_total: int) -> StreamFeed:
    """``specs`` in the order given (ties at one millisecond keep it); kline files of one symbol are chained
    in time order (``data.load`` sorted and checked them). ``lo``/``hi``: the replayed period, inclusive."""
    by_symbol: dict[str, list[DataSpec]] = {}
    sources: list[Callable[[], Iterator[MarketEvent]]] = []
    funding: dict[str, list[MarketEvent]] = {}
    total = kline_events_total
    for spec in specs:
        if spec.kind in ("ft_klines", "vision_klines"):
            if spec.symbol not in by_symbol:
                by_symbol[spec.symbol] = []
                sources.append(_kline_source(by_symbol[spec.symbol], lo, hi))
            by_symbol[spec.symbol].append(spec)
            continue
        if spec.kind == "ft_funding":
            evs = loaders.load_freqtrade_funding(Path(spec.path), spec.symbol)
        elif spec.kind == "vision_funding":
            evs = loaders.load_vision_funding(Path(spec.path), spec.symbol)
        else:
            evs = loaders.load_vision_aggtrades(Path(spec.path), spec.market, spec.symbol)
        if spec.kind.endswith("funding"):
            funding.setdefault(spec.symbol, []).extend(evs)
        inside = [ev for ev in evs if lo <= ev.time <= hi]
        total += len(inside)
        sources.append(lambda inside=inside: iter(inside))
    return StreamFeed(sources, total, funding)
