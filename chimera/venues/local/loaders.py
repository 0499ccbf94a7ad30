"""Loaders turning real Binance data files into MarketEvent streams.

Supported: Binance Vision kline / aggTrades / fundingRate CSVs (plain or zipped, ms or µs
timestamps), freqtrade kline JSON/feather and funding feather, and the recorded WebSocket
streams (`<local_ts> <json>` gzip lines).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from .engine.market import MarketEvent

KLINE_OFFSETS = (0, 20_000, 40_000, 59_999)
INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
               "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "8h": 28_800_000, "1d": 86_400_000}


def to_ms(ts: int | float) -> int:
    """Normalise s / ms / µs / ns epoch stamps to ms (Binance archives switched spot to µs in 2025)."""
    ts = int(ts)
    if ts > 10**17:
        return ts // 1_000_000
    if ts > 10**14:
        return ts // 1_000
    if ts < 10**11:
        return ts * 1000
    return ts


def _open_text(path: Path) -> io.TextIOBase:
    path = Path(path)
    if path.suffix == ".zip":
        zf = zipfile.ZipFile(path)
        name = next(n for n in zf.namelist() if n.endswith(".csv"))
        return io.TextIOWrapper(zf.open(name), encoding="utf-8")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _rows(path: Path) -> Iterator[list[str]]:
    with _open_text(path) as fh:
        for row in csv.reader(fh):
            if not row or not row[0].strip().lstrip("-").isdigit():
                continue  # header line (newer archives carry one)
            yield row


# -- klines ------------------------------------------------------------------------------------
Kline = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]


def kline_path(k: Kline, interval_ms: int) -> list[tuple[int, Decimal]]:
    """Deterministic intrabar path: close >= open goes O->H->L->C, otherwise O->L->H->C."""
    t, o, h, lo, c, _ = k
    mids = (h, lo) if c >= o else (lo, h)
    scale = interval_ms / 60_000
    offsets = [int(x * scale) for x in KLINE_OFFSETS]
    offsets[-1] = interval_ms - 1
    return list(zip(offsets and [t + x for x in offsets], (o, mids[0], mids[1], c), strict=True))


def kline_events(klines: list[Kline], market: str, symbol: str, interval: str = "1m") -> Iterator[MarketEvent]:
    ims = INTERVAL_MS[interval]
    for k in klines:
        qty = k[5] / 4
        o = k[1]
        hi = lo = o
        s_open = s_hi = s_lo = str(o)  # the forming bar's high/low so far, as the kline stream shows it
        for i, (t, price) in enumerate(kline_path(k, ims)):
            s_price = str(price)
            if price > hi:
                hi, s_hi = price, s_price
            if price < lo:
                lo, s_lo = price, s_price
            yield MarketEvent(time=t, market=market, symbol=symbol, kind="trade", price=price, qty=qty,
                              raw={"kline": [k[0], s_open, s_hi, s_lo, s_price, str(k[5] * (i + 1) / 4),
                                             interval, i == 3]})


def load_vision_klines_row(r: list[str]) -> Kline:
    return (to_ms(r[0]), Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]), Decimal(r[5]))


def load_vision_klines(path: Path) -> list[Kline]:
    return [load_vision_klines_row(r) for r in _rows(path)]


def load_freqtrade_klines(path: Path) -> list[Kline]:
    path = Path(path)
    if path.suffix == ".feather":
        import pandas as pd

        df = pd.read_feather(path)
        ts = (df["date"].astype("int64") // 1_000_000).tolist()
        cols = [df[c].tolist() for c in ("open", "high", "low", "close", "volume")]
        return [(t, *(Decimal(repr(float(c[i]))) for c in cols)) for i, t in enumerate(ts)]
    with _open_text(path) as fh:
        data = json.load(fh)
    return [(to_ms(r[0]), *(Decimal(str(x)) for x in r[1:6])) for r in data]


# -- trades / funding ----------------------------------------------------------------------------
def load_vision_aggtrades(path: Path, market: str, symbol: str) -> list[MarketEvent]:
    out = []
    for r in _rows(path):
        out.append(MarketEvent(time=to_ms(r[5]), market=market, symbol=symbol, kind="trade", price=Decimal(r[1]),
                               qty=Decimal(r[2]), buyer_maker=r[6].strip().lower() == "true",
                               raw={"a": int(r[0]), "f": int(r[3]), "l": int(r[4])}))
    return out


def load_vision_funding(path: Path, symbol: str) -> list[MarketEvent]:
    return [MarketEvent(time=to_ms(r[0]), market="futures", symbol=symbol, kind="funding", rate=Decimal(r[2]))
            for r in _rows(path)]


def load_freqtrade_funding(path: Path, symbol: str) -> list[MarketEvent]:
    import pandas as pd

    df = pd.read_feather(path)
    ts = (df["date"].astype("int64") // 1_000_000).tolist()
    # freqtrade stores the funding rate in the "open" column.
    return [MarketEvent(time=t, market="futures", symbol=symbol, kind="funding", rate=Decimal(repr(float(r))))
            for t, r in zip(ts, df["open"].tolist(), strict=True)]


# -- recorded WebSocket streams ------------------------------------------------------------------
def _levels(rows: list) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in rows]


def load_ws_recording(path: Path, market: str) -> list[MarketEvent]:
    """Parse `<local_ts> <json>` lines; exchange time (E/T) wins over the recorder's clock.

    Event times are forced non-decreasing in file order so the recorded sequence is replayed as is.
    """
    out: list[MarketEvent] = []
    last_t = 0
    symbol_hint = Path(path).name.split("_")[0].upper()
    with _open_text(Path(path)) as fh:
        for line in fh:
            local, _, body = line.partition(" ")
            if not body.strip():
                continue
            msg = json.loads(body)
            data = msg.get("data", msg)
            stream = msg.get("stream", "")
            # markPrice's "T" is the next funding time, not the event time.
            t = data.get("E") if "@markPrice" in stream else (data.get("T") or data.get("E"))
            t = t or to_ms(int(local))
            t = max(int(t), last_t)
            last_t = t
            sym = data.get("s", symbol_hint)
            if not stream:
                if "lastUpdateId" in msg:
                    out.append(MarketEvent(time=t, market=market, symbol=sym, kind="depth", snapshot=True,
                                           bids=_levels(msg["bids"]), asks=_levels(msg["asks"]), raw=msg))
                continue
            if "@trade" in stream or "@aggTrade" in stream:
                out.append(MarketEvent(time=t, market=market, symbol=sym, kind="trade", price=Decimal(data["p"]),
                                       qty=Decimal(data["q"]), buyer_maker=bool(data.get("m")), raw=data))
            elif "@bookTicker" in stream:
                out.append(MarketEvent(time=t, market=market, symbol=sym, kind="book",
                                       bid=Decimal(data["b"]), bid_qty=Decimal(data["B"]),
                                       ask=Decimal(data["a"]), ask_qty=Decimal(data["A"]), raw=data))
            elif "@depth" in stream:
                out.append(MarketEvent(time=t, market=market, symbol=sym, kind="depth",
                                       bids=_levels(data.get("b", [])), asks=_levels(data.get("a", [])), raw=data))
            elif "@markPrice" in stream:
                out.append(MarketEvent(time=t, market=market, symbol=sym, kind="mark", price=Decimal(data["p"]),
                                       rate=Decimal(data.get("r") or "0"), raw=data))
    return out
