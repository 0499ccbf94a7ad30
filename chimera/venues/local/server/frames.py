"""Market-stream payloads generated from replayed events, per Binance stream name."""

from __future__ import annotations

from collections.abc import Callable

from ..engine.market import MarketEvent
from ..engine.model import FUTURES, fmt


def no_funding() -> tuple[str, int]:
    return "0", 0


def market_frames(ev: MarketEvent, wanted: set[str],
                  funding: Callable[[], tuple[str, int]] = no_funding) -> list[tuple[str, dict]]:
    """`funding()` gives (rate, next funding time) for a kline-only mark frame; only called when one is built."""
    sym = ev.symbol.lower()
    out: list[tuple[str, dict]] = []
    fut = ev.market == FUTURES
    if ev.kind == "trade":
        raw = ev.raw or {}
        tid = raw.get("t", ev.seq)
        if f"{sym}@trade" in wanted:
            d = {"e": "trade", "E": ev.time, "T": ev.time, "s": ev.symbol, "t": tid, "p": fmt(ev.price),
                 "q": fmt(ev.qty), "m": ev.buyer_maker}
            d.update({"X": "MARKET"} if fut else {"M": True})
            out.append((f"{sym}@trade", d))
        if f"{sym}@aggTrade" in wanted:
            out.append((f"{sym}@aggTrade", {"e": "aggTrade", "E": ev.time, "s": ev.symbol, "a": raw.get("a", tid),
                                            "p": fmt(ev.price), "q": fmt(ev.qty), "f": raw.get("f", tid),
                                            "l": raw.get("l", tid), "T": ev.time, "m": ev.buyer_maker}))
        kline = raw.get("kline")
        if kline:
            name = f"{sym}@kline_{kline[6]}"
            if name in wanted:
                from ..loaders import INTERVAL_MS

                t0 = kline[0]
                out.append((name, {"e": "kline", "E": ev.time, "s": ev.symbol, "k": {
                    "t": t0, "T": t0 + INTERVAL_MS[kline[6]] - 1, "s": ev.symbol, "i": kline[6], "f": 0, "L": 0,
                    "o": kline[1], "c": kline[4], "h": kline[2], "l": kline[3], "v": kline[5], "n": 0,
                    "x": kline[7], "q": "0", "V": "0", "Q": "0", "B": "0"}}))
        if fut and kline:
            # Kline-only replays carry no mark stream: the last price stands in as the mark.
            for name in (f"{sym}@markPrice@1s", f"{sym}@markPrice"):
                if name in wanted:
                    funding_rate, next_funding = funding()
                    out.append((name, {"e": "markPriceUpdate", "E": ev.time, "s": ev.symbol, "p": fmt(ev.price),
                                       "i": fmt(ev.price), "P": fmt(ev.price), "r": funding_rate,
                                       "T": next_funding}))
    elif ev.kind == "book" and f"{sym}@bookTicker" in wanted:
        d = {"u": (ev.raw or {}).get("u", ev.seq), "s": ev.symbol, "b": fmt(ev.bid), "B": fmt(ev.bid_qty),
             "a": fmt(ev.ask), "A": fmt(ev.ask_qty)}
        if fut:
            d = {"e": "bookTicker", **d, "T": ev.time, "E": ev.time}
        out.append((f"{sym}@bookTicker", d))
    elif ev.kind == "depth" and not ev.snapshot:
        for name in (f"{sym}@depth", f"{sym}@depth@100ms", f"{sym}@depth@0ms", f"{sym}@depth@500ms"):
            if name in wanted:
                out.append((name, ev.raw or {}))
    elif ev.kind == "mark":
        for name in (f"{sym}@markPrice@1s", f"{sym}@markPrice"):
            if name in wanted:
                out.append((name, ev.raw or {"e": "markPriceUpdate", "E": ev.time, "s": ev.symbol,
                                             "p": fmt(ev.price), "r": fmt(ev.rate)}))
    return out
