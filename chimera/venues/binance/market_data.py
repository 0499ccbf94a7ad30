"""Binance market data through the official SDKs (USDT-M futures and spot): REST klines (backfill,
recompute), REST depth snapshots (S1's local order books) and the normalization of WebSocket
stream payloads into Chimera messages (S1).

Pure normalizers (``normalize_*``) take the raw Binance JSON dict of one stream frame; they
are shared by the live, testnet and paper (local venue) paths.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chimera.schemas.messages import BookTicker, Kline, MarkPrice, Trade

INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}
MAX_KLINES = {"perp": 1500, "spot": 1000}  # REST limit per request


def futures_rest(base_url: str, api_key: str = "", api_secret: str = "", timeout_ms: int = 10_000, retries: int = 3):
    """The USDT-M futures SDK's REST client. ``retries=0`` for order calls: the SDK must never resend a POST."""
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationRestAPI,
        DerivativesTradingUsdsFutures,
    )

    cfg = ConfigurationRestAPI(api_key=api_key, api_secret=api_secret, base_path=base_url, timeout=timeout_ms,
                               retries=retries)
    return DerivativesTradingUsdsFutures(config_rest_api=cfg).rest_api


def spot_rest(base_url: str, api_key: str = "", api_secret: str = "", timeout_ms: int = 10_000, retries: int = 3):
    from binance_sdk_spot.spot import ConfigurationRestAPI, Spot

    cfg = ConfigurationRestAPI(api_key=api_key, api_secret=api_secret, base_path=base_url, timeout=timeout_ms,
                               retries=retries)
    return Spot(config_rest_api=cfg).rest_api


def depth_snapshot(rest, symbol: str, market: str = "perp", limit: int = 1000) -> dict:
    """``{"lastUpdateId", "bids", "asks"}`` (Binance field names, string prices) from the REST order book."""
    resp = rest.order_book(symbol=symbol, limit=limit) if market == "perp" else rest.depth(symbol=symbol, limit=limit)
    data = resp.data() if hasattr(resp, "data") else resp
    d = data.to_dict() if hasattr(data, "to_dict") else dict(data)
    return {"lastUpdateId": int(d["lastUpdateId"]), "bids": [[str(p), str(q)] for p, q in d.get("bids") or []],
            "asks": [[str(p), str(q)] for p, q in d.get("asks") or []]}


def _rows(resp) -> list[list]:
    data = resp.data() if hasattr(resp, "data") else resp
    out = []
    for row in data:
        row = getattr(row, "actual_instance", row)
        if hasattr(row, "to_dict"):
            row = row.to_dict()
        out.append([getattr(x, "actual_instance", x) for x in row])
    return out


def fetch_klines(rest, symbol: str, start_ms: int, end_ms: int, interval: str = "1m",
                 market: str = "perp") -> list[Kline]:
    """Closed bars with ``start_ms <= open_time < end_ms``, in order (paginated). ``rest``: the futures
    SDK's for ``market="perp"``, the spot SDK's for ``"spot"``."""
    width = INTERVAL_MS[interval]
    out: list[Kline] = []
    cursor = start_ms
    call = rest.kline_candlestick_data if market == "perp" else rest.klines
    while cursor < end_ms:
        rows = _rows(call(symbol=symbol, interval=interval, start_time=cursor, end_time=end_ms - 1,
                          limit=MAX_KLINES[market]))
        if not rows:
            break
        for r in rows:
            t = int(r[0])
            if t < cursor or t >= end_ms:
                continue
            out.append(Kline(market=market, symbol=symbol, interval=interval, open_time=t, close_time=t + width - 1,
                             open=Decimal(str(r[1])), high=Decimal(str(r[2])), low=Decimal(str(r[3])),
                             close=Decimal(str(r[4])), volume=Decimal(str(r[5])), closed=True))
        last = int(rows[-1][0])
        if last + width <= cursor:
            break
        cursor = last + width
    return out


def drop_forming(klines: list[Kline], now_ms: int) -> list[Kline]:
    """REST returns the bar still forming at ``now``: only closed ones count."""
    return [k for k in klines if k.close_time < now_ms]


# --- stream frames → messages -----------------------------------------------------------------


def _d(x: Any) -> Decimal:
    return Decimal(str(x))


def mid_spread(bid: Decimal, ask: Decimal) -> tuple[Decimal, float]:
    mid = (bid + ask) / 2
    spread_bp = float((ask - bid) / mid * 10_000) if mid > 0 else 0.0
    return mid, spread_bp


def normalize_book_ticker(d: dict, market: str = "perp") -> BookTicker:
    bid, ask = _d(d["b"]), _d(d["a"])
    mid, spread = mid_spread(bid, ask)
    return BookTicker(market=market, symbol=d["s"], bid=bid, bid_qty=_d(d["B"]), ask=ask, ask_qty=_d(d["A"]),
                      mid=mid, spread_bp=spread, ts=int(d.get("T") or d.get("E") or 0))


def normalize_agg_trade(d: dict, market: str = "perp") -> Trade:
    return Trade(market=market, symbol=d["s"], trade_id=int(d.get("a", d.get("t", 0))), price=_d(d["p"]),
                 qty=_d(d["q"]), buyer_is_maker=bool(d.get("m", False)), ts=int(d.get("T") or d.get("E") or 0))


def normalize_kline(d: dict, market: str = "perp") -> Kline:
    k = d["k"]
    return Kline(market=market, symbol=k.get("s", d.get("s")), interval=k["i"], open_time=int(k["t"]),
                 close_time=int(k["T"]), open=_d(k["o"]), high=_d(k["h"]), low=_d(k["l"]), close=_d(k["c"]),
                 volume=_d(k["v"]), closed=bool(k["x"]))


def normalize_mark_price(d: dict) -> MarkPrice:
    r = d.get("r")
    return MarkPrice(symbol=d["s"], mark_price=_d(d["p"]), index_price=_d(d["i"]) if d.get("i") else None,
                     funding_rate=_d(r) if r not in (None, "") else None, next_funding_time=int(d.get("T") or 0),
                     ts=int(d.get("E") or 0))
