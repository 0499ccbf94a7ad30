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
    feed: Feed
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


def _klines(spec: DataSpec, text: str) -> list:
    try:
        if spec.kind == "ft_klines":
            return loaders.load_freqtrade_klines(Path(spec.path))
        return _vision_klines(Path(spec.path))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure becomes a message naming the file
        raise DataError(f"--data {text!r}: {spec.path} could not be read as {spec.kind}: {exc}") from None


def _vision_klines(path: Path) -> list:
    """Binance Vision kline CSV (zip or plain), naming the line of a bad row."""
    out = []
    with loaders._open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            row = line.strip().split(",")
            if not row or not row[0].strip().lstrip("-").isdigit():
                if lineno == 1:
                    continue  # header
                raise DataError(f"{path}: line {lineno}: not a kline row: {line.strip()[:80]!r}")
            try:
                out.append(loaders.load_vision_klines_row(row))
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{path}: line {lineno}: {exc}: {line.strip()[:80]!r}") from None
    return out


def check_gaps(series: list[tuple[int, DataSpec, str, int]], lo: int | None, hi: int | None) -> int:
    """One symbol's bars ``(open ms, spec, --data text, row)`` from all its files, in time order: inside
    [lo, hi] consecutive bars must be one interval apart. Returns how many bars are inside."""
    prev = None
    n = 0
    for t, spec, text, row in series:
        if (lo is not None and t < lo) or (hi is not None and t > hi):
            continue
        step = loaders.INTERVAL_MS[spec.interval]
        if prev is not None and t == prev:
            raise DataError(f"--data {text!r}: {spec.path}: {spec.symbol} bar {_iso(t)} appears twice "
                            f"(row {row}); give each period once")
        if prev is not None and t != prev + step:
            where = f"row {row}" if spec.kind == "ft_klines" else f"line {row} (one more with a header line)"
            raise DataError(f"--data {text!r}: {spec.path}: gap in {spec.symbol} {spec.interval} bars: "
                            f"{_iso(prev)} is followed by {_iso(t)} ({(t - prev) // step - 1} bars missing from "
                            f"{_iso(prev + step)}), at {where}; fill the gap or choose --from/--to around it")
        prev = t
        n += 1
    return n


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


def load(data: list[str], from_text: str | None = None, to_text: str | None = None) -> Dataset:
    lo, to = parse_time(from_text, "--from"), parse_time(to_text, "--to")
    if lo is not None and to is not None and lo >= to:
        raise DataError(f"--from {from_text} is after --to {to_text}" if lo > to else
                        f"--from {from_text} equals --to {to_text}: the period is empty (--to is exclusive)")
    hi = None if to is None else to - 1  # --to is exclusive: the bar opening at --to is not replayed
    if not data:
        raise DataError("no --data given; e.g. --data sample, or --data BTCUSDT-1m-2025-07.zip")
    known = set(ExchangeInfo.load().rules["futures"])
    specs: list[DataSpec] = []
    series: dict[str, list] = {}
    loaded: dict[int, list] = {}
    for text in data:
        for spec in parse_spec(text):
            _check_file(spec, text, known)
            if spec.kind in KLINE_KINDS:
                bars = loaded[len(specs)] = _klines(spec, text)
                series.setdefault(spec.symbol, []).extend((k[0], spec, text, i + 1) for i, k in enumerate(bars))
            specs.append(spec)
    n_bars = sum(check_gaps(sorted(s, key=lambda x: x[0]), lo, hi) for s in series.values())
    symbols = sorted(series)
    if not symbols:
        raise DataError("the --data given hold no klines (only funding or trades); add a kline file per symbol")
    for a, b in zip(specs, specs[1:], strict=False):
        if a.kind == b.kind and a.symbol == b.symbol and a.path == b.path:
            raise DataError(f"--data names {a.path} twice")
    if not n_bars:
        raise DataError(f"no bars between --from {from_text} and --to {to_text} in the data given")
    try:
        feed = build_feed(specs, lo, hi, loaded)
    except Exception as exc:  # noqa: BLE001 - a loader failure on funding/trade files
        raise DataError(f"--data: could not load: {exc}") from None
    first, last = feed.events[0].time, feed.events[-1].time
    return Dataset(specs=tuple(specs), feed=feed, symbols=symbols, start_ms=first, end_ms=last,
                   data_hash=_digest(specs, lo, hi), bars=n_bars)
