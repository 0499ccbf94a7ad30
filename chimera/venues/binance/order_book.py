"""A local order book kept from a REST depth snapshot and the diff depth stream, per Binance's
"How to manage a local order book correctly" (USDⓈ-M futures and spot). Pure: no I/O.

Sequencing, with ``L`` the book's last update id (the snapshot's ``lastUpdateId`` at first):

* an event older than the book is dropped: futures ``u < L`` (``u == L`` too once the first event
  after the snapshot was applied), spot ``u <= L``;
* the first event applied after the snapshot must straddle it: ``U <= L <= u`` (futures; its
  ``pu == L`` also links it, since futures update ids are shared by all symbols and an event
  may start after ``L``), ``U <= L + 1 <= u`` (spot);
* every later event must follow the previous one: futures ``pu == L``, spot ``U == L + 1``.

Anything else raises ``SequenceGap``: the caller discards the book and starts again from a new
snapshot. Quantities are absolute; 0 removes the level (removing an absent level is normal).

Levels are kept as Binance's own strings, indexed by the price as a float (equal decimal prices
give equal floats whatever their formatting, "61000.10" or "61000.1", and order the same way): a
diff costs no Decimal arithmetic, and ``top`` turns the best levels into exact Decimals.
"""

from __future__ import annotations

import heapq
from decimal import Decimal

Level = tuple[Decimal, Decimal]


class SequenceGap(Exception):
    """The diff stream skipped updates: the book cannot be trusted any more."""


class OrderBook:
    def __init__(self, symbol: str, market: str) -> None:
        if market not in ("perp", "spot"):
            raise ValueError(f"market must be perp or spot, not {market!r}")
        self.symbol = symbol
        self.futures = market == "perp"
        self.bids: dict[float, tuple[str, str]] = {}  # price -> (price, qty) as received
        self.asks: dict[float, tuple[str, str]] = {}
        self.last_id = 0
        self.loaded = False  # a snapshot is in
        self.linked = False  # the first event after the snapshot is in

    def load(self, snapshot: dict) -> None:
        self.bids, self.asks = {}, {}
        _merge(self.bids, snapshot.get("bids", ()))
        _merge(self.asks, snapshot.get("asks", ()))
        self.last_id = int(snapshot["lastUpdateId"])
        self.loaded, self.linked = True, False

    def reset(self) -> None:
        self.bids, self.asks = {}, {}
        self.last_id, self.loaded, self.linked = 0, False, False

    def is_stale(self, d: dict) -> bool:
        u, last = int(d["u"]), self.last_id
        if self.futures:
            return u < last or (self.linked and u == last)
        return u <= last

    def apply(self, d: dict) -> bool:
        """Apply one diff event. False: older than the book, dropped. Raises SequenceGap."""
        if not self.loaded:
            raise SequenceGap(f"{self.symbol}: no snapshot loaded")
        if self.is_stale(d):
            return False
        first, last, pu = int(d["U"]), int(d["u"]), d.get("pu")
        if not self.linked:
            if self.futures:
                ok = first <= self.last_id <= last or (pu is not None and int(pu) == self.last_id)
            else:
                ok = first <= self.last_id + 1 <= last
        elif self.futures:
            ok = pu is not None and int(pu) == self.last_id
        else:
            ok = first == self.last_id + 1
        if not ok:
            raise SequenceGap(f"{self.symbol}: event U={first} u={last} pu={pu} does not follow {self.last_id}")
        _merge(self.bids, d.get("b", ()))
        _merge(self.asks, d.get("a", ()))
        self.last_id, self.linked = last, True
        return True

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """Best ``n`` levels per side, best first, as Decimals."""
        bids = [_level(self.bids[p]) for p in heapq.nlargest(n, self.bids)]
        asks = [_level(self.asks[p]) for p in heapq.nsmallest(n, self.asks)]
        return bids, asks


def _level(pq: tuple[str, str]) -> Level:
    return Decimal(pq[0]), Decimal(pq[1])


def _merge(side: dict[float, tuple[str, str]], levels) -> None:
    pop = side.pop
    for p, q in levels:
        if float(q):
            side[float(p)] = (p, q)
        else:
            pop(float(p), None)
