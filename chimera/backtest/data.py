"""``--data SPEC`` and ``--from/--to``: parsed and checked before anything runs or is written.

A spec is one of:

* ``sample``: the real BTC/ETH USDT-M 1m sample shipped in ``chimera/venues/local/data``;
* a file path whose name says what it is: Binance Vision ``BTCUSDT-1m-2025-07.zip`` (klines) or
  ``BTCUSDT-fundingRate-2025-07.zip``, freqtrade ``BTC_USDT_USDT-1m-futures.feather|json`` or
  ``BTC_USDT_USDT-8h-funding_rate.feather``;
* the venue's explicit form ``kind:market:SYMBOL:path[:interval]`` (kinds: ft_klines, ft_funding,
  vision_klines, vision_funding, vision_aggtrades; ``docs/venue.md``).

Every refusal is a ``DataError`` naming the spec, the file and, for a gap, the first missing bar.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chimera.backtest.stream import RowError, StreamFeed, numbered_klines, stream_feed
from chimera.venues.local import loaders
from chimera.venues.local.engine.rules import ExchangeInfo
from chimera.venues.local.replay.feed import DataSpec, Feed, build_feed, sample_specs

KINDS = ("ft_klines", "ft_funding", "vision_klines", "vision_funding", "vision_aggtrades")
KLINE_KINDS = ("ft_klines", "vision_klines")
_VISION_KLINES = re.compile(r"^(?P<sym>[A-Z0-9]+)-(?P<iv>\d+[mhdw])-\d{4}-\d{2}(-\d{2})?\.(zip|csv)$")
_VISION_FUNDING = re.compile(r"^(?P<sym>[A-Z0-9]+)-fundingRate-\d{4}-\d{2}\.(zip|csv)$")
_FT_KLINES = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)_[A-Z0-9]+-(?P<iv>\d+[mhdw])-futures\.(feather|json)$")
_FT_FUNDING = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)_[A-Z0-9]+-\d+[mhdw]-funding_rate\.feather$")


class DataError(ValueError):
    """Bad --data / --from / --to: the message says what and where, and how to fix it."""


@dataclass(frozen=True)
class Dataset:
    specs: tuple[DataSpec, ...]
    feed: Feed | StreamFeed
    symbols: list[str]
    start_ms: int
    end_ms: int
    data_hash: str  # sha256 over the specs and the bytes of every file
    bars: int  # klines loaded (all symbols), within the period [--from, --to)


def parse_time(text: str | None, option: str) -> int | None:
    """``2025-07-01``, ``2025-07-01T12:30`` (UTC) or epoch milliseconds."""
    if text is None or text == "":
        return None
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"{option} {text!r}: not a date; use 2025-07-01, 2025-07-01T12:30 (UTC) or epoch ms") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_spec(text: str) -> list[DataSpec]:
    if text == "sample":
        return sample_specs()
    explicit = text.split(":", 1)[0]
    if explicit in KINDS or (":" in text and explicit.islower() and not Path(text).exists()):
        try:
            spec = DataSpec.parse(text)
        except ValueError:
            raise DataError(f"--data {text!r}: expected kind:market:SYMBOL:path[:interval], "
                            f"e.g. vision_klines:futures:BTCUSDT:BTCUSDT-1m-2025-07.zip") from None
        if spec.kind not in KINDS:
            raise DataError(f"--data {text!r}: unknown kind {spec.kind!r}; one of {', '.join(KINDS)}")
        if spec.market != "futures":
            raise DataError(f"--data {text!r}: market {spec.market!r}; backtests trade USDT-M futures ('futures')")
        return [spec]
    name = Path(text).name
    if m := _VISION_KLINES.match(name):
        return [DataSpec("vision_klines", text, "futures", m["sym"], m["iv"])]
    if m := _VISION_FUNDING.match(name):
        return [DataSpec("vision_funding", text, "futures", m["sym"])]
    if m := _FT_KLINES.match(name):
        return [DataSpec("ft_klines", text, "futures", m["base"] + m["quote"], m["iv"])]
    if m := _FT_FUNDING.match(name):
        return [DataSpec("ft_funding", text, "futures", m["base"] + m["quote"])]
    raise DataError(f"--data {text!r}: cannot tell what this file holds from its name; name it as Binance Vision "
                    "(BTCUSDT-1m-2025-07.zip, BTCUSDT-fundingRate-2025-07.zip) or freqtrade "
                    "(BTC_USDT_USDT-1m-futures.feather, BTC_USDT_USDT-8h-funding_rate.feather) does, or write "
                    "kind:futures:SYMBOL:path[:interval]")


def _check_file(spec: DataSpec, text: str, symbols: set[str]) -> None:
    if not Path(spec.path).is_file():
        raise DataError(f"--data {text!r}: file {spec.path} does not exist")
    if spec.symbol not in symbols:
        raise DataError(f"--data {text!r}: symbol {spec.symbol!r} is not in the venue's exchangeInfo "
                        f"({', '.join(sorted(symbols))})")
    if spec.interval not in loaders.INTERVAL_MS:
        raise DataError(f"--data {text!r}: interval {spec.interval!r}; one of {', '.join(loaders.INTERVAL_MS)}")


@dataclass
class _Span:
    """What the check of one kline file keeps: its bars inside the period, not the bars themselves."""

    spec: DataSpec
    text: str
    first: int | None = None
    last: int | None = None
    first_row: int = 0
    n: int = 0


def _check_file_bars(spec: DataSpec, text: str, lo: int | None, hi: int | None) -> _Span:
    """Read one kline file row by row: bad rows by line, and inside [lo, hi] consecutive bars one interval
    apart (``check_gaps``' messages)."""
    span = _Span(spec, text)
    step = loaders.INTERVAL_MS[spec.interval]
    prev = None
    try:
        for row, k in numbered_klines(spec, lo, hi):
            t = k[0]
            if prev is not None:
                _consecutive(spec, text, prev, t, step, row)
            else:
                span.first, span.first_row = t, row
            prev = span.last = t
            span.n += 1
    except RowError as exc:
        raise DataError(f"{spec.path}: {exc}") from None
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure becomes a message naming the file
        raise DataError(f"--data {text!r}: {spec.path} could not be read as {spec.kind}: {exc}") from None
    return span


def _consecutive(spec: DataSpec, text: str, prev: int, t: int, step: int, row: int) -> None:
    if t <= prev:
        raise DataError(f"--data {text!r}: {spec.path}: {spec.symbol} bar {_iso(t)} appears twice "
                        f"(row {row}); give each period once" if t == prev else
                        f"--data {text!r}: {spec.path}: {spec.symbol} bar {_iso(t)} (row {row}) comes after "
                        f"{_iso(prev)}: bars must be in time order, and each period given once")
    if t != prev + step:
        where = f"row {row}" if spec.kind == "ft_klines" else f"line {row}"
        raise DataError(f"--data {text!r}: {spec.path}: gap in {spec.symbol} {spec.interval} bars: "
                        f"{_iso(prev)} is followed by {_iso(t)} ({(t - prev) // step - 1} bars missing from "
                        f"{_iso(prev + step)}), at {where}; fill the gap or choose --from/--to around it")


def _check_series(spans: list[_Span]) -> list[_Span]:
    """One symbol's files in time order, each continuing the previous one; returns them sorted."""
    spans = sorted((s for s in spans if s.n), key=lambda s: s.first)
    for a, b in zip(spans, spans[1:], strict=False):
        if b.first <= a.last:
            raise DataError(f"--data {b.text!r}: {b.spec.path}: {b.spec.symbol} bar {_iso(b.first)} appears twice "
                            f"(row {b.first_row}; also in {a.spec.path}, up to {_iso(a.last)}); give each period once")
        _consecutive(b.spec, b.text, a.last, b.first, loaders.INTERVAL_MS[b.spec.interval], b.first_row)
    return spans


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def _digest(specs: list[DataSpec], lo: int | None, hi: int | None) -> str:
    h = hashlib.sha256()
    for s in specs:
        h.update(f"{s.kind}|{s.market}|{s.symbol}|{s.interval}|".encode())
        with open(s.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    h.update(f"|{lo}|{hi}".encode())
    return h.hexdigest()


def load(data: list[str], from_text: str | None = None, to_text: str | None = None,
         stream: bool = False) -> Dataset:
    """Check every --data and the period, then build the replay feed: materialised (the venue's
    ``build_feed``, ``feed.events``) or, with ``stream``, generated while it is consumed (``StreamFeed``:
    a year of bars never sits in memory)."""
    lo, to = parse_time(from_text, "--from"), parse_time(to_text, "--to")
    if lo is not None and to is not None and lo >= to:
        raise DataError(f"--from {from_text} is after --to {to_text}" if lo > to else
                        f"--from {from_text} equals --to {to_text}: the period is empty (--to is exclusive)")
    hi = None if to is None else to - 1  # --to is exclusive: the bar opening at --to is not replayed
    if not data:
        raise DataError("no --data given; e.g. --data sample, or --data BTCUSDT-1m-2025-07.zip")
    known = set(ExchangeInfo.load().rules["futures"])
    specs: list[DataSpec] = []
    spans: dict[str, list[_Span]] = {}
    for text in data:
        for spec in parse_spec(text):
            _check_file(spec, text, known)
            if any(spec.kind == s.kind and spec.symbol == s.symbol and spec.path == s.path for s in specs):
                raise DataError(f"--data names {spec.path} twice")
            if spec.kind in KLINE_KINDS:
                spans.setdefault(spec.symbol, []).append(_check_file_bars(spec, text, lo, hi))
            specs.append(spec)
    symbols = sorted(spans)
    if not symbols:
        raise DataError("the --data given hold no klines (only funding or trades); add a kline file per symbol")
    series = {sym: _check_series(s) for sym, s in spans.items()}
    n_bars = sum(s.n for ss in series.values() for s in ss)
    if not n_bars:
        raise DataError(f"no bars between --from {from_text} and --to {to_text} in the data given")
    first = min(ss[0].first for ss in series.values() if ss)
    last_open = max(ss[-1].last for ss in series.values() if ss)
    # One symbol's kline files replay in time order; everything else in the order given (ties at one ms).
    in_time = {sym: iter([s.spec for s in ss]) for sym, ss in series.items()}
    replay = []
    for spec in specs:
        if spec.kind in KLINE_KINDS:
            spec = next(in_time[spec.symbol], None)
            if spec is None:
                continue  # a file with no bars in the period
        replay.append(spec)
    try:
        if stream:
            end = hi if hi is not None else last_open + max(loaders.INTERVAL_MS[s.spec.interval]
                                                            for ss in series.values() for s in ss) - 1
            feed = stream_feed(replay, first if lo is None else lo, end, 4 * n_bars)
        else:
            feed = build_feed(replay, lo, hi)
    except Exception as exc:  # noqa: BLE001 - a loader failure on funding/trade files
        raise DataError(f"--data: could not load: {exc}") from None
    width = loaders.INTERVAL_MS[series[symbols[0]][0].spec.interval]
    return Dataset(specs=tuple(specs), feed=feed, symbols=symbols, start_ms=first, end_ms=last_open + width - 1,
                   data_hash=_digest(specs, lo, hi), bars=n_bars)
