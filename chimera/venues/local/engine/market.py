"""Per-symbol market state built from replayed events, and the taker fill model."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .model import ZERO

BPS = Decimal("0.0001")
RECENT_DIFFS = 64  # diffs kept to re-apply over a snapshot recorded after them


@dataclass
class MarketEvent:
    """One replayed market fact. kind: trade | book | depth | mark | funding.

    `seq` breaks ties between sources at the same millisecond so replay order is deterministic.
    """

    time: int
    market: str
    symbol: str
    kind: str
    price: Decimal = ZERO
    qty: Decimal = ZERO
    bid: Decimal = ZERO
    bid_qty: Decimal = ZERO
    ask: Decimal = ZERO
    ask_qty: Decimal = ZERO
    rate: Decimal = ZERO
    buyer_maker: bool = False
    bids: list = field(default_factory=list)
    asks: list = field(default_factory=list)
    snapshot: bool = False
    raw: dict | None = None
    seq: int = 0


def event_from_json(raw: dict, now_ms: int) -> MarketEvent:
    """An injected market event (``POST /chimera/v1/market``): never earlier than ``now_ms``."""
    return MarketEvent(time=max(int(raw.get("time", now_ms)), now_ms), market=raw.get("market", "futures"),
                       symbol=raw["symbol"], kind=raw["kind"],
                       **{k: Decimal(str(raw[k])) for k in ("price", "qty", "bid", "bid_qty", "ask", "ask_qty", "rate")
                          if k in raw})


@dataclass
class FillModel:
    """How orders fill when the data does not say (docs/fill_model.md is the trader's version).

    half_spread_bps: with no recorded book (klines, aggTrades), every trade at p quotes a synthetic
      bid p·(1 − h) rounded down to the tick and ask p·(1 + h) rounded up (so at least one tick apart).
    depth_share: the quantity quoted at that synthetic bid and ask, as a share of the trade's quantity
      (a kline path point carries a quarter of the bar's volume).
    impact_bps_per_million: extra slippage per 1,000,000 quote units beyond the visible liquidity.
    fill_mode: "through" fills a resting limit only when the market trades strictly through its
      price; "touch" already when it reaches it.
    """

    half_spread_bps: Decimal = Decimal("1")
    impact_bps_per_million: Decimal = Decimal("5")
    fill_mode: str = "through"
    depth_share: Decimal = Decimal("0.1")

    def quote(self, price: Decimal, qty: Decimal, tick: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """The synthetic (bid, bid_qty, ask, ask_qty) around a trade when no book was recorded."""
        half = price * self.half_spread_bps * BPS
        bid, ask = price - half, price + half
        if tick:
            bid = (bid / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
            ask = (ask / tick).to_integral_value(rounding=ROUND_CEILING) * tick
            if bid == price:  # a spread narrower than a tick still leaves the trade between bid and ask
                bid -= tick
            if ask == price:
                ask += tick
        depth = qty * self.depth_share
        return bid, depth, ask, depth


@dataclass
class SymbolMarket:
    symbol: str
    tick: Decimal = ZERO
    # Quotes around each trade while no book was ever recorded for the symbol (kline-only data).
    model: FillModel | None = None
    has_book: bool = False
    last: Decimal = ZERO
    bid: Decimal = ZERO
    bid_qty: Decimal = ZERO
    ask: Decimal = ZERO
    ask_qty: Decimal = ZERO
    mark: Decimal = ZERO
    funding_rate: Decimal = ZERO
    next_funding: int = 0
    time: int = 0
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    has_depth: bool = False
    depth_id: int = 0  # update id of the last diff in the book (REST depth lastUpdateId)
    recent_diffs: deque = field(default_factory=lambda: deque(maxlen=RECENT_DIFFS))

    @property
    def mark_or_last(self) -> Decimal:
        return self.mark or self.last

    def best_bid(self) -> Decimal:
        return self.bid or self.last

    def best_ask(self) -> Decimal:
        return self.ask or self.last

    def apply(self, ev: MarketEvent) -> None:
        self.time = ev.time
        if ev.kind == "trade":
            self.last = ev.price
            if self.model is not None and not (self.has_book or self.has_depth):
                self.bid, self.bid_qty, self.ask, self.ask_qty = self.model.quote(ev.price, ev.qty, self.tick)
            # A trade outside a recorded quote moves that side to it, so crossing checks stay sane.
            elif self.bid and self.ask and not (self.bid <= ev.price <= self.ask):
                if ev.price > self.ask:
                    self.ask = ev.price
                else:
                    self.bid = ev.price
        elif ev.kind == "book":
            self.has_book = True
            self.bid, self.bid_qty, self.ask, self.ask_qty = ev.bid, ev.bid_qty, ev.ask, ev.ask_qty
        elif ev.kind == "depth":
            self._apply_depth(ev)
        elif ev.kind == "mark":
            self.mark = ev.price
            if ev.rate:
                self.funding_rate = ev.rate

    def _apply_depth(self, ev: MarketEvent) -> None:
        """Binance's local-book procedure on the recorded events: a snapshot, then the diffs after it.

        A recorder fetches its snapshot while diffs stream in, so diffs recorded just *before* the
        snapshot can be newer than it: they are re-applied on top of it (those with ``u`` above its
        ``lastUpdateId``), and a diff the book already holds is skipped.
        """
        raw = ev.raw or {}
        if ev.snapshot:
            self.bids.clear()
            self.asks.clear()
            self.has_depth = True
            self._merge(ev.bids, ev.asks)
            self.depth_id = int(raw.get("lastUpdateId") or 0)
            for u, bids, asks in list(self.recent_diffs):
                if u > self.depth_id:
                    self._merge(bids, asks)
                    self.depth_id = u
            self.recent_diffs.clear()
            return
        u = int(raw.get("u") or 0)
        if u and self.has_depth and u <= self.depth_id:
            return
        self._merge(ev.bids, ev.asks)
        if u:
            self.depth_id = u
            self.recent_diffs.append((u, ev.bids, ev.asks))

    def _merge(self, bids, asks) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q

    def depth_book(self, limit: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The recorded order book alone (no bookTicker merged in), best first."""
        return (heapq.nlargest(limit, self.bids.items()), heapq.nsmallest(limit, self.asks.items()))

    def reference(self, side: str) -> Decimal:
        return self.best_ask() if side == "BUY" else self.best_bid()

    def levels(self, side: str) -> list[tuple[Decimal, Decimal]]:
        """Visible liquidity a taker on `side` would consume, best first."""
        if side == "BUY":
            top = self.ask
            book = sorted((p, q) for p, q in self.asks.items() if not top or p >= top)
            if top and self.ask_qty and (not book or book[0][0] > top):
                book.insert(0, (top, self.ask_qty))
        else:
            top = self.bid
            book = sorted(((p, q) for p, q in self.bids.items() if not top or p <= top), reverse=True)
            if top and self.bid_qty and (not book or book[0][0] < top):
                book.insert(0, (top, self.bid_qty))
        return book

    def taker_fills(self, side: str, qty: Decimal, model: FillModel, tick: Decimal,
                    limit: Decimal | None = None) -> list[tuple[Decimal, Decimal]]:
        """Split a taker order into (price, qty) legs; `limit` caps the price for LIMIT IOC/FOK/GTC."""
        legs: list[tuple[Decimal, Decimal]] = []
        left = qty
        sign = 1 if side == "BUY" else -1
        consumed_notional = ZERO
        last_price = ZERO
        for price, avail in self.levels(side):
            if limit is not None and (price - limit) * sign > 0:
                return legs
            take = min(left, avail)
            legs.append((price, take))
            consumed_notional += price * take
            last_price = price
            left -= take
            if left <= 0:
                return legs
        ref = self.reference(side)
        if ref <= 0:
            return legs
        if not last_price:
            # No visible book: cross an assumed spread around the last trade.
            last_price = ref if (self.bid and self.ask) else ref * (1 + sign * model.half_spread_bps * BPS)
        notional = left * last_price
        impact = model.impact_bps_per_million * (notional / Decimal(1_000_000)) * BPS
        price = last_price * (1 + sign * impact)
        if tick:
            rounding = ROUND_CEILING if side == "BUY" else ROUND_FLOOR
            price = (price / tick).to_integral_value(rounding=rounding) * tick
        if limit is not None and (price - limit) * sign > 0:
            return legs
        legs.append((price, left))
        return legs
