"""Virtual positions (HedgeStack): several strategies share one venue account; each holds its own
position per (account, symbol, position side, strategy). Pure: no I/O, no clock.

Quantities are signed (long > 0, short < 0) in every position side, so one rule serves one-way mode
(``BOTH``) and hedge mode (``LONG`` / ``SHORT``, where Binance reports the SHORT amount negative) and
the venue's ``positionAmt`` compares directly. Money is Decimal, in the quote asset (USDT):

* a fill at weighted average cost: an increase moves the average, a reduction realizes
  ``(price - avg) * closed * direction`` and keeps the average, a fill crossing zero closes the old
  direction and opens the rest at the fill price;
* ``realized_pnl`` is NET: trading PnL minus fees plus funding (``trading_pnl``, ``fees`` and
  ``funding`` are kept beside it). A fee charged in another asset (BNB) is kept in ``fees_other``
  and left out of the net, since it has no USDT price here;
* funding of an (account, symbol) is shared pro rata to the signed quantities held, to 1e-8, the
  rounding remainder on the largest share, so the shares add up to the venue's amount exactly;
* ``UNASSIGNED``: venue quantity no strategy explains (a manual order, a lost report). Fills whose
  client order id Chimera does not know book there; a reconcile moves any remaining difference
  there, so after every fill and every reconcile Σ virtual qty per (account, symbol, side) equals
  the venue's.

One ``VirtualBook`` document per (account, market, symbol) holds every strategy's position there,
the trade ids and funding ids already booked (a redelivered fill is booked once, even when the
crash came between the write and the runtime's done-marker) and what the last reconcile saw.
Keeping them in one document makes a fill, its de-duplication and the invariant one
compare-and-set write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

ZERO = Decimal(0)
CENT8 = Decimal("1e-8")
UNASSIGNED = "UNASSIGNED"
MANUAL = "manual"  # a Chimera order with no bundle behind it (an operator's order through the gateway)
POSITION_SIDES = ("BOTH", "LONG", "SHORT")
BOOKED_WINDOW = 2000  # trade ids remembered per book: far more than a redelivery can lag behind
FUNDING_WINDOW = 500


class VirtualPosition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    account_id: str
    market: str = "FUT"
    symbol: str
    position_side: str = "BOTH"
    strategy: str
    qty: Decimal = ZERO  # signed: long > 0, short < 0
    avg_cost: Decimal = ZERO  # weighted average entry price of ``qty``; 0 when flat
    realized_pnl: Decimal = ZERO  # net: trading_pnl - fees + funding
    trading_pnl: Decimal = ZERO
    fees: Decimal = ZERO  # in the quote asset
    fees_other: dict[str, Decimal] = {}  # fees charged in another asset, by asset
    funding: Decimal = ZERO  # received > 0, paid < 0
    fills: int = 0
    adjustments: int = 0  # reconcile moves (UNASSIGNED only)
    updated_at: int = 0  # venue time of the last fill or funding booked

    @property
    def key(self) -> tuple[str, str]:
        return self.position_side, self.strategy


class VirtualBook(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """``virtual_books/<account>:<market>:<symbol>``."""

    account_id: str
    market: str = "FUT"
    symbol: str
    positions: list[VirtualPosition] = []
    booked: list[str] = []  # trade ids, oldest first (window)
    booked_funding: list[str] = []  # funding tran ids, oldest first (window)
    last_fill_ts: int = 0  # venue time of the newest fill booked
    funding_cursor: int = 0  # funding_time of the newest funding booked
    venue_qty: dict[str, Decimal] = {}  # per position side, as the last reconcile read it
    venue_seen_trade: int = 0  # the newest trade id the venue's quantity included at that reconcile
    reconciled_at: int = 0  # clock ms of the last reconcile
    version: int = 0

    @property
    def key(self) -> str:
        return book_key(self.account_id, self.market, self.symbol)

    def position(self, position_side: str, strategy: str) -> VirtualPosition:
        for p in self.positions:
            if p.position_side == position_side and p.strategy == strategy:
                return p
        return VirtualPosition(account_id=self.account_id, market=self.market, symbol=self.symbol,
                               position_side=position_side, strategy=strategy)

    def total(self, position_side: str) -> Decimal:
        return sum((p.qty for p in self.positions if p.position_side == position_side), ZERO)

    def sides(self) -> set[str]:
        return {p.position_side for p in self.positions} | set(self.venue_qty)


def book_key(account_id: str, market: str, symbol: str) -> str:
    return f"{account_id}:{market}:{symbol}"


def new_book(account_id: str, symbol: str, market: str = "FUT") -> VirtualBook:
    return VirtualBook(account_id=account_id, market=market, symbol=symbol)


def to_doc(book: VirtualBook) -> dict[str, Any]:
    return msgspec.to_builtins(book)


def from_doc(raw: Mapping | None) -> VirtualBook | None:
    if raw is None:
        return None
    return msgspec.convert({k: v for k, v in raw.items() if not k.startswith("_")}, VirtualBook, strict=False)


def check_side(position_side: str) -> str:
    if position_side not in POSITION_SIDES:
        raise ValueError(f"position side {position_side!r} is not one of {POSITION_SIDES}")
    return position_side


# --- one position --------------------------------------------------------------------------------


def apply_fill(pos: VirtualPosition, *, side: str, qty: Decimal, price: Decimal, fee: Decimal = ZERO,
               fee_asset: str = "USDT", quote: str = "USDT", ts: int = 0, adjustment: bool = False) -> VirtualPosition:
    """``pos`` after a fill of ``qty`` (> 0) on ``side`` (BUY | SELL) at ``price``, at weighted average cost.

    ``adjustment``: a reconcile's quantity move into or out of UNASSIGNED, not a trade: it moves the
    quantity (and the average when it adds) but realizes nothing, so moving a quantity there and back
    leaves no PnL behind."""
    if side not in ("BUY", "SELL"):
        raise ValueError(f"fill side {side!r} is not BUY or SELL")
    if qty <= 0:
        raise ValueError(f"fill qty must be positive, got {qty}")
    signed = qty if side == "BUY" else -qty
    q, avg, trading = pos.qty, pos.avg_cost, ZERO
    if q and (q > 0) != (signed > 0):  # against the position: close first
        closed = min(qty, abs(q))
        direction = 1 if q > 0 else -1
        trading = ZERO if adjustment else (price - avg) * closed * direction
        q -= direction * closed
        rest = qty - closed
        if q == 0:
            avg = ZERO
        if rest:  # crossed zero: the rest opens the other direction at the fill price
            q, avg = (rest if signed > 0 else -rest), price
    else:
        new = q + signed
        avg = (abs(q) * avg + qty * price) / abs(new)
        q = new
    pos = msgspec.structs.replace(pos, qty=q, avg_cost=avg, trading_pnl=pos.trading_pnl + trading,
                                  realized_pnl=pos.realized_pnl + trading, updated_at=max(pos.updated_at, ts))
    if adjustment:
        return msgspec.structs.replace(pos, adjustments=pos.adjustments + 1)
    return charge_fee(pos, fee, fee_asset, quote)


def charge_fee(pos: VirtualPosition, fee: Decimal, fee_asset: str = "USDT", quote: str = "USDT",
               ts: int = 0) -> VirtualPosition:
    """One trade's fee (and the trade counted): quote fees reduce the net PnL, others are kept aside."""
    other, fees, net = pos.fees_other, pos.fees, pos.realized_pnl
    if fee and fee_asset and fee_asset != quote:
        other = {**other, fee_asset: other.get(fee_asset, ZERO) + fee}
    else:
        fees, net = fees + fee, net - fee
    return msgspec.structs.replace(pos, fees=fees, fees_other=other, realized_pnl=net, fills=pos.fills + 1,
                                   updated_at=max(pos.updated_at, ts))


def apply_funding(pos: VirtualPosition, amount: Decimal, ts: int = 0) -> VirtualPosition:
    return msgspec.structs.replace(pos, funding=pos.funding + amount, realized_pnl=pos.realized_pnl + amount,
                                   updated_at=max(pos.updated_at, ts))


# --- the book ------------------------------------------------------------------------------------


def _put(book: VirtualBook, pos: VirtualPosition) -> list[VirtualPosition]:
    others = [p for p in book.positions if p.key != pos.key]
    return sorted([*others, pos], key=lambda p: (p.position_side, p.strategy))


def _window(items: list[str], new: str, size: int) -> list[str]:
    return [*items, new][-size:]


def book_fill(book: VirtualBook, *, trade_id: str, strategy: str, side: str, qty: Decimal, price: Decimal,
              fee: Decimal = ZERO, fee_asset: str = "USDT", position_side: str = "BOTH",
              ts: int = 0) -> tuple[VirtualBook, bool]:
    """Book one venue trade to ``strategy``'s position; ``(book, False)`` if the trade id was booked before.

    A trade whose id is at or below the newest trade the last reconcile's venue reading included was
    in the venue's quantity then, so that reconcile moved it to UNASSIGNED: it moves from there to its
    strategy now, and the sum keeps matching the venue. (Trade ids, not times: Binance's ids grow per
    symbol, while two trades can share a millisecond, and a paused replay gives them all one.)"""
    check_side(position_side)
    if trade_id in book.booked:
        return book, False
    pos = book.position(position_side, strategy)
    covered = 0 < trade_number(trade_id) <= book.venue_seen_trade
    if covered and strategy == UNASSIGNED:
        # Already where the reconcile put it: only the fee is new.
        book = msgspec.structs.replace(book, positions=_put(book, charge_fee(pos, fee, fee_asset, ts=ts)))
    else:
        book = msgspec.structs.replace(book, positions=_put(book, apply_fill(
            pos, side=side, qty=qty, price=price, fee=fee, fee_asset=fee_asset, ts=ts)))
        if covered:
            book = _uncover(book, side, qty, price, position_side, ts)
    return _booked(book, trade_id, ts), True


def _uncover(book: VirtualBook, side: str, qty: Decimal, price: Decimal, position_side: str, ts: int) -> VirtualBook:
    """Take back from UNASSIGNED what a reconcile put there for a trade now booked to its owners."""
    un = apply_fill(book.position(position_side, UNASSIGNED), side="SELL" if side == "BUY" else "BUY",
                    qty=qty, price=price, ts=ts, adjustment=True)
    return msgspec.structs.replace(book, positions=_put(book, un))


def _booked(book: VirtualBook, trade_id: str, ts: int) -> VirtualBook:
    return msgspec.structs.replace(book, booked=_window(book.booked, trade_id, BOOKED_WINDOW),
                                   last_fill_ts=max(book.last_fill_ts, ts))


def forced_shares(positions: Iterable[VirtualPosition], side: str, qty: Decimal) -> dict[tuple[str, str], Decimal]:
    """A venue-initiated close (liquidation, ADL) of ``qty`` on ``side`` split over the positions it
    reduces, pro rata to their size, each share to 1e-8 (remainder on the largest) and at most the
    position; what no position covers is left out (the caller books it to UNASSIGNED)."""
    reducible = {p.key: abs(p.qty) for p in positions if p.qty and (p.qty > 0) == (side == "SELL")}
    total = sum(reducible.values(), ZERO)
    if not total:
        return {}
    take = min(qty, total)
    shares = {k: min(w, (take * w / total).quantize(CENT8)) for k, w in reducible.items()}
    largest = max(shares, key=lambda k: (reducible[k], k))
    shares[largest] = min(reducible[largest], shares[largest] + take - sum(shares.values(), ZERO))
    return {k: v for k, v in shares.items() if v}


def book_forced_close(book: VirtualBook, *, trade_id: str, side: str, qty: Decimal, price: Decimal,
                      fee: Decimal = ZERO, fee_asset: str = "USDT", position_side: str = "BOTH",
                      ts: int = 0) -> tuple[VirtualBook, bool]:
    """Book the venue's own closing trade (liquidation ``autoclose-...``, ADL ``adl_autoclose``): it
    closes the account's position, so every strategy holding it loses its share at that price, pro
    rata, instead of UNASSIGNED taking the whole opposite quantity."""
    check_side(position_side)
    if trade_id in book.booked:
        return book, False
    covered = 0 < trade_number(trade_id) <= book.venue_seen_trade
    if covered:  # the reconcile moved it to UNASSIGNED: back first, so the holders are as before it
        book = _uncover(book, side, qty, price, position_side, ts)
    holders = [p for p in book.positions if p.position_side == position_side]
    shares = forced_shares(holders, side, qty)
    rest = qty - sum(shares.values(), ZERO)
    if rest:
        shares[(position_side, UNASSIGNED)] = shares.get((position_side, UNASSIGNED), ZERO) + rest
    biggest = max(shares, key=lambda k: (shares[k], k))
    for (pside, strategy), part in sorted(shares.items()):
        pos = apply_fill(book.position(pside, strategy), side=side, qty=part, price=price,
                         fee=fee if (pside, strategy) == biggest else ZERO, fee_asset=fee_asset, ts=ts)
        book = msgspec.structs.replace(book, positions=_put(book, pos))
    return _booked(book, trade_id, ts), True


def funding_shares(positions: Iterable[VirtualPosition], amount: Decimal) -> dict[tuple[str, str], Decimal]:
    """``amount`` split pro rata to the signed quantities (funding is paid on the net position), each
    share to 1e-8, the remainder on the largest; by |qty| when the quantities net to zero. Empty when
    nothing is held."""
    held = [p for p in positions if p.qty]
    if not held:
        return {}
    weights = {p.key: p.qty for p in held}
    total = sum(weights.values(), ZERO)
    if total == 0:
        weights = {k: abs(w) for k, w in weights.items()}
        total = sum(weights.values(), ZERO)
    shares = {k: (amount * w / total).quantize(CENT8) for k, w in weights.items()}
    largest = max(shares, key=lambda k: (abs(weights[k]), k))
    shares[largest] += amount - sum(shares.values(), ZERO)
    return shares


def book_funding(book: VirtualBook, *, tran_id: str, amount: Decimal, ts: int = 0,
                 position_side: str = "BOTH") -> tuple[VirtualBook, bool]:
    """Share one funding settlement of the book's symbol among the positions held; with none held it
    is UNASSIGNED's (nothing a strategy holds explains it)."""
    if tran_id in book.booked_funding:
        return book, False
    shares = funding_shares(book.positions, amount) or {(position_side, UNASSIGNED): amount}
    positions = book
    for (side, strategy), share in shares.items():
        pos = apply_funding(positions.position(side, strategy), share, ts)
        positions = msgspec.structs.replace(positions, positions=_put(positions, pos))
    return msgspec.structs.replace(positions, booked_funding=_window(book.booked_funding, tran_id, FUNDING_WINDOW),
                                   funding_cursor=max(book.funding_cursor, ts)), True


def trade_number(trade_id: str) -> int:
    """A venue trade id as a number (0 when it is not one)."""
    return int(trade_id) if str(trade_id).isdigit() else 0


def reconcile(book: VirtualBook, venue: Mapping[str, tuple[Decimal, Decimal]], last_trade_id: int,
              now_ms: int = 0) -> tuple[VirtualBook, dict[str, Decimal]]:
    """Make Σ virtual qty per position side equal the venue's by moving the difference to UNASSIGNED.

    ``venue``: position side -> (signed amount, entry price) as the venue reports it, read while the
    account's newest trade on the symbol was ``last_trade_id`` (the caller checks it did not change
    during the read); a side the book holds but the venue does not list counts as 0. Returns the book
    and the quantity moved per side (only sides that moved). The move books at the venue's entry price
    and realizes nothing a strategy owns."""
    moved: dict[str, Decimal] = {}
    qtys = {}
    for side in sorted(book.sides() | set(venue)):
        amt, entry = venue.get(side, (ZERO, ZERO))
        check_side(side)
        qtys[side] = amt
        diff = amt - book.total(side)
        if diff:
            un = book.position(side, UNASSIGNED)
            price = entry or un.avg_cost or ZERO
            un = apply_fill(un, side="BUY" if diff > 0 else "SELL", qty=abs(diff), price=price, adjustment=True)
            book = msgspec.structs.replace(book, positions=_put(book, un))
            moved[side] = diff
    return msgspec.structs.replace(book, venue_qty=qtys, venue_seen_trade=max(book.venue_seen_trade, last_trade_id),
                                   reconciled_at=now_ms), moved


def unassigned(book: VirtualBook) -> dict[str, Decimal]:
    """UNASSIGNED quantity per position side (non-zero only)."""
    return {p.position_side: p.qty for p in book.positions if p.strategy == UNASSIGNED and p.qty}
