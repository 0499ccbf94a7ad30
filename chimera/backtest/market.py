"""What S1 would publish for each replayed market event, for the in-process runtime.

The venue server turns a replayed event into WebSocket frames (``server/frames.market_frames``) and
S1 turns the frames it subscribes to into messages with ``venues/binance/market_data``'s
normalisers and its own idempotency keys. Doing the same two steps here keeps the in-process
backtest and a Redis replay of the same data on identical messages (issue 12 item 3's test).
"""

from __future__ import annotations

from collections.abc import Iterator

from chimera.feeds.publish import kline_key
from chimera.schemas.envelope import Message
from chimera.streams import keys
from chimera.venues.binance import market_data as md
from chimera.venues.local.engine.market import MarketEvent
from chimera.venues.local.server.frames import market_frames


def wanted_streams(symbols: list[str]) -> set[str]:
    """S1's perp subscriptions that feed S2/S6 (aggTrade and bookTicker are not features: skipped)."""
    out: set[str] = set()
    for s in symbols:
        low = s.lower()
        out |= {f"{low}@kline_1m", f"{low}@markPrice@1s", f"{low}@bookTicker"}
    return out


def messages(ev: MarketEvent, wanted: set[str], funding) -> Iterator[tuple[str, Message, str, int]]:
    """(stream, message, idempotency key, event time) for one replayed futures event, as S1 publishes."""
    for name, data in market_frames(ev, wanted, funding):
        stream = keys.mkt_stream("perp", str(data.get("s", ev.symbol)).upper())
        if "@kline_" in name:
            k = md.normalize_kline(data, "perp")
            if k.closed:
                yield stream, k, kline_key(k), k.close_time
        elif "@markPrice" in name:
            mp = md.normalize_mark_price(data)
            yield stream, mp, f"mark:{mp.symbol}:{mp.ts}", mp.ts
        elif name.endswith("@bookTicker"):
            b = md.normalize_book_ticker(data, "perp")
            yield stream, b, f"book:perp:{b.symbol}:{data.get('u', b.ts)}", b.ts
