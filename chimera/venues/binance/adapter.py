"""The Binance trading adapter: futures (USDT-M) and spot order calls over the official SDKs.

One code path for paper (the local venue's loopback URL), testnet and live; only the base URL
and the keys differ (ARCHITECTURE §7). Everything the router needs to keep exchange effects
exactly-once lives in the error translation here:

* timeout, 5xx, dropped connection  -> ``VenueUnknown``: the request may have executed. The
  caller resolves it by querying the order by its client id, never by resending blindly;
* 429 / 418                         -> ``VenueRateLimited`` (retryable, carries Retry-After);
* duplicate client order id         -> ``AlreadyAccepted``: the venue already has our order;
  the caller fetches and adopts it;
* unknown order (-2013 / -2011)     -> ``OrderNotFound``;
* any other 4xx                     -> ``VenueRejected`` with the venue's code and message.

The SDK's own retries are switched off (``retries=0``): an automatic resend of a POST after a
lost reply is exactly the blind resend we must never do.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any

from binance_common.errors import (
    BadRequestError,
    ClientError,
    Error,
    ForbiddenError,
    NetworkError,
    NotFoundError,
    RateLimitBanError,
    ServerError,
    TooManyRequestsError,
    UnauthorizedError,
)

from chimera.errors import FatalError, PermanentError, RetryableError
from chimera.venues.binance.market_data import futures_rest, spot_rest
from chimera.venues.binance.user_data import D

# --- errors ------------------------------------------------------------------------------------


class VenueError(Exception):
    code: int | None = None
    msg: str = ""


class VenueUnknown(VenueError, RetryableError):
    """The request may or may not have reached the venue (timeout, 5xx, lost connection)."""


class VenueRateLimited(VenueError, RetryableError):
    def __init__(self, msg: str, code: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(msg)
        self.msg, self.code, self.retry_after = msg, code, retry_after


class VenueRejected(VenueError, PermanentError):
    def __init__(self, code: int | None, msg: str) -> None:
        super().__init__(f"venue rejected: {code} {msg}")
        self.code, self.msg = code, msg


class AlreadyAccepted(VenueRejected):
    """Duplicate client order id: the venue holds an order with this id; fetch and adopt it."""


class OrderNotFound(VenueRejected):
    pass


# Futures -4116 "ClientOrderId is duplicated."; spot -2010 "Duplicate order sent.".
_DUPLICATE = re.compile(r"duplicat", re.IGNORECASE)
_NOT_FOUND_CODES = {-2013, -2011}
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046


def rejection(code: int | None, msg: str) -> VenueRejected:
    """A venue's ``{code, msg}`` refusal -> the Chimera error (shared with the in-process venue)."""
    if code in _NOT_FOUND_CODES:
        return OrderNotFound(code, msg)
    if code in (-4116, -2010, -4015) and _DUPLICATE.search(msg or ""):
        return AlreadyAccepted(code, msg)
    return VenueRejected(code, msg)


def changed_unless_4046(change) -> bool:
    """Run a margin-type change: True if it changed, False on -4046 "No need to change margin type."."""
    try:
        change()
    except VenueRejected as exc:
        if exc.code == NO_NEED_TO_CHANGE_MARGIN_TYPE:
            return False
        raise
    return True


def translate(exc: Exception) -> Exception:
    """SDK exception -> the Chimera error the router acts on."""
    if isinstance(exc, (TooManyRequestsError, RateLimitBanError)):
        return VenueRateLimited(exc.error_message, exc.status_code, exc.retry_after)
    if isinstance(exc, (ServerError, NetworkError)):
        return VenueUnknown(f"outcome unknown: {type(exc).__name__}: {getattr(exc, 'error_message', exc)}")
    if isinstance(exc, (UnauthorizedError, ForbiddenError)):
        return FatalError(f"venue refused our credentials: {exc.status_code} {exc.error_message}")
    if isinstance(exc, (BadRequestError, NotFoundError, ClientError)):
        return rejection(getattr(exc, "status_code", None), getattr(exc, "error_message", str(exc)))
    if isinstance(exc, Error):
        return VenueUnknown(f"outcome unknown: {type(exc).__name__}: {exc}")
    # requests' own timeouts/connection errors can escape the SDK on some paths.
    import requests

    if isinstance(exc, requests.RequestException):
        return VenueUnknown(f"outcome unknown: {type(exc).__name__}: {exc}")
    return exc


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised, translated
        out = translate(exc)
        if out is exc:
            raise
        raise out from exc


# --- ids and numbers -------------------------------------------------------------------------------

_CID_OK = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


def client_order_id(intent_id: str, leg: str) -> str:
    """Deterministic ``newClientOrderId`` for an intent's leg (Binance: <=36 chars, [.A-Z:/a-z0-9_-]).

    Derived, never random or time-based, so a redelivered command addresses the same order. The
    leg stays readable in the prefix; the digest keeps arbitrary intent ids inside the limit.
    """
    leg_part = re.sub(r"[^A-Za-z0-9]", "", leg)[:8] or "x"
    digest = hashlib.sha256(f"{intent_id}|{leg}".encode()).hexdigest()
    cid = f"c{leg_part}-{digest}"[:36]
    assert _CID_OK.match(cid)
    return cid


@dataclass(frozen=True)
class Filters:
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal

    def price(self, p: Decimal, side: str = "", passive: bool = False) -> Decimal:
        """Round to the tick. Passive (maker) prices round away from the touch so they stay passive."""
        if passive:
            mode = ROUND_DOWN if side == "BUY" else ROUND_UP
            return (p / self.tick).to_integral_value(rounding=mode) * self.tick
        return (p / self.tick).to_integral_value(rounding=ROUND_HALF_UP) * self.tick

    def qty(self, q: Decimal) -> Decimal:
        """Quantities round down: never trade more than asked."""
        return (q / self.step).to_integral_value(rounding=ROUND_DOWN) * self.step


def _filters_from(sym: dict) -> Filters:
    tick = step = min_qty = min_notional = Decimal(0)
    for f in sym.get("filters", []):
        t = f.get("filterType")
        if t == "PRICE_FILTER":
            tick = D(f["tickSize"])
        elif t == "LOT_SIZE":
            step, min_qty = D(f["stepSize"]), D(f["minQty"])
        elif t in ("MIN_NOTIONAL", "NOTIONAL"):
            min_notional = D(f.get("notional") or f.get("minNotional") or 0)
    return Filters(tick.normalize(), step.normalize(), min_qty, min_notional)


# --- normalized order ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VenueOrder:
    client_order_id: str
    venue_order_id: str
    symbol: str
    side: str
    type: str
    status: str  # Binance status: NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, REJECTED, TRIGGERED...
    qty: Decimal
    filled_qty: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    price: Decimal = Decimal(0)
    stop_price: Decimal = Decimal(0)
    reduce_only: bool = False
    algo: bool = False
    update_time: int = 0
    list_id: str = ""


def _dict(data: Any) -> dict:
    if isinstance(data, dict):
        return data
    out = data.to_dict() if hasattr(data, "to_dict") else dict(data)
    extra = out.pop("additional_properties", None) or {}
    return {**extra, **out}


def _order(raw: Any, algo: bool = False) -> VenueOrder:
    d = _dict(raw)
    if algo:
        # The algo service reports NEW/TRIGGERED/FINISHED/CANCELED; the triggered child order holds fills.
        status = {"FINISHED": "FILLED"}.get(d.get("algoStatus", ""), d.get("algoStatus", "NEW"))
        return VenueOrder(
            client_order_id=d.get("clientAlgoId", ""), venue_order_id=str(d.get("algoId", "")),
            symbol=d.get("symbol", ""), side=d.get("side", ""), type=d.get("orderType", ""), status=status,
            qty=D(d.get("quantity")), price=D(d.get("price")), stop_price=D(d.get("triggerPrice")),
            reduce_only=bool(d.get("reduceOnly")), algo=True, update_time=int(d.get("updateTime") or 0),
            avg_price=D(d["actualPrice"]) if D(d.get("actualPrice")) else None,
        )
    filled = D(d.get("executedQty"))
    avg = D(d.get("avgPrice"))
    if not avg and filled and D(d.get("cummulativeQuoteQty")):  # spot reports quote totals, not an average
        avg = D(d["cummulativeQuoteQty"]) / filled
    return VenueOrder(
        client_order_id=d.get("clientOrderId", ""), venue_order_id=str(d.get("orderId", "")),
        symbol=d.get("symbol", ""), side=d.get("side", ""), type=d.get("origType") or d.get("type", ""),
        status=d.get("status", ""), qty=D(d.get("origQty")), filled_qty=filled, avg_price=avg or None,
        price=D(d.get("price")), stop_price=D(d.get("stopPrice")), reduce_only=bool(d.get("reduceOnly")),
        update_time=int(d.get("updateTime") or d.get("transactTime") or 0),
        list_id=str(d.get("orderListId", "")) if d.get("orderListId", -1) not in (-1, None) else "",
    )


@dataclass(frozen=True)
class Book:
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]

    @property
    def mid(self) -> Decimal | None:
        if not self.bids or not self.asks:
            return None
        return (self.bids[0][0] + self.asks[0][0]) / 2


def _book(raw: Any, depth: int) -> Book:
    d = _dict(raw)
    return Book(bids=[(D(p), D(q)) for p, q in d.get("bids", [])[:depth]],
                asks=[(D(p), D(q)) for p, q in d.get("asks", [])[:depth]])


# --- clients -------------------------------------------------------------------------------------------

FUTURES_URLS = {"testnet": "https://testnet.binancefuture.com", "live": "https://fapi.binance.com"}
SPOT_URLS = {"testnet": "https://testnet.binance.vision", "live": "https://api.binance.com"}


class _Base:
    def __init__(self) -> None:
        self._filters: dict[str, Filters] = {}
        self._lock = threading.Lock()

    def filters(self, symbol: str) -> Filters:
        if symbol not in self._filters:
            with self._lock, _translated():
                info = self._exchange_info()
                for sym in info.get("symbols", []):
                    self._filters[sym["symbol"]] = _filters_from(sym)
        try:
            return self._filters[symbol]
        except KeyError:
            raise VenueRejected(-1121, f"Invalid symbol {symbol}") from None

    def _exchange_info(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError


class FuturesTrading(_Base):
    """USDT-M futures: orders, conditional (algo) orders, positions."""

    market = "FUT"

    def __init__(self, base_url: str, api_key: str, api_secret: str, timeout_ms: int = 5000) -> None:
        super().__init__()
        self.api = futures_rest(base_url, api_key, api_secret, timeout_ms, retries=0)

    def _exchange_info(self) -> dict:
        return _dict(self.api.exchange_information().data())

    def book(self, symbol: str, depth: int = 5) -> Book:
        with _translated():
            return _book(self.api.order_book(symbol=symbol, limit=max(depth, 5)).data(), depth)

    def new_order(self, *, symbol: str, side: str, type: str, qty: Decimal, client_id: str,
                  price: Decimal | None = None, tif: str | None = None, reduce_only: bool = False) -> VenueOrder:
        """LIMIT (GTC/GTX/IOC) or MARKET. MARKET asks for the RESULT so the fill comes back at once."""
        with _translated():
            res = self.api.new_order(
                symbol=symbol, side=side, type=type, quantity=qty, price=price,
                time_in_force=tif if type == "LIMIT" else None,
                reduce_only="true" if reduce_only else None, new_client_order_id=client_id,
                new_order_resp_type="RESULT" if type == "MARKET" else None,
            )
            return _order(res.data())

    def new_stop(self, *, symbol: str, side: str, type: str, qty: Decimal | None, trigger: Decimal,
                 client_id: str, close_position: bool = False) -> VenueOrder:
        """STOP_MARKET / TAKE_PROFIT_MARKET, reduce-only, triggered on the mark price (algo service)."""
        with _translated():
            res = self.api.new_algo_order(
                algo_type="CONDITIONAL", symbol=symbol, side=side, type=type, trigger_price=trigger,
                quantity=None if close_position else qty,
                reduce_only=None if close_position else "true",
                close_position="true" if close_position else None,
                working_type="MARK_PRICE", client_algo_id=client_id,
            )
            return _order(res.data(), algo=True)

    def query(self, symbol: str, client_id: str, algo: bool = False) -> VenueOrder:
        with _translated():
            if algo:
                return _order(self.api.query_algo_order(client_algo_id=client_id).data(), algo=True)
            return _order(self.api.query_order(symbol=symbol, orig_client_order_id=client_id).data())

    def cancel(self, symbol: str, client_id: str, algo: bool = False) -> None:
        with _translated():
            if algo:
                self.api.cancel_algo_order(client_algo_id=client_id)
            else:
                self.api.cancel_order(symbol=symbol, orig_client_order_id=client_id)

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        with _translated():
            return [_order(o) for o in self.api.current_all_open_orders(symbol=symbol).data()]

    def open_algo_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        with _translated():
            return [_order(o, algo=True) for o in self.api.current_all_algo_open_orders(symbol=symbol).data()]

    def position_risk(self, symbol: str | None = None) -> list[dict]:
        with _translated():
            return [_dict(p) for p in self.api.position_information_v2(symbol=symbol).data()]

    def force_orders(self, symbol: str, start_ms: int | None = None) -> list[dict]:
        """The venue's liquidation and ADL orders on ``symbol`` (``GET /fapi/v1/forceOrders``), oldest first."""
        with _translated():
            return [_dict(o) for o in self.api.users_force_orders(symbol=symbol, start_time=start_ms, limit=100).data()]

    def trades(self, symbol: str, venue_order_id: str) -> list[dict]:
        with _translated():
            return [_dict(t) for t in self.api.account_trade_list(symbol=symbol, order_id=int(venue_order_id)).data()]

    def trades_between(self, symbol: str, start_ms: int, end_ms: int, limit: int = 1000) -> list[dict]:
        """``GET /fapi/v1/userTrades`` of ``symbol`` in [start, end] (Binance: at most 7 days), oldest first."""
        with _translated():
            return [_dict(t) for t in self.api.account_trade_list(symbol=symbol, start_time=start_ms, end_time=end_ms,
                                                                  limit=limit).data()]

    def income(self, start_ms: int, end_ms: int, limit: int = 1000) -> list[dict]:
        """``GET /fapi/v1/income``: every wallet movement (REALIZED_PNL, COMMISSION, FUNDING_FEE, TRANSFER...)."""
        with _translated():
            return [_dict(i) for i in self.api.get_income_history(start_time=start_ms, end_time=end_ms,
                                                                  limit=limit).data()]

    def server_time(self) -> int:
        with _translated():
            return int(_dict(self.api.check_server_time().data())["serverTime"])

    def available_balance(self, asset: str = "USDT") -> Decimal:
        """Free futures margin of ``asset`` (``availableBalance`` of /fapi/v3/balance); 0 if absent."""
        with _translated():
            rows = [_dict(b) for b in self.api.futures_account_balance_v3().data()]
        return next((D(b.get("availableBalance")) for b in rows if b.get("asset") == asset), Decimal(0))

    def set_leverage(self, symbol: str, leverage: int) -> dict:
        """``POST /fapi/v1/leverage``; setting the leverage already in force succeeds (Binance answers it)."""
        with _translated():
            return _dict(self.api.change_initial_leverage(symbol=symbol, leverage=int(leverage)).data())

    def set_margin_type(self, symbol: str, margin_type: str) -> bool:
        """``POST /fapi/v1/marginType``. True when it changed, False when it already was (-4046 is success)."""
        def change() -> None:
            with _translated():
                self.api.change_margin_type(symbol=symbol, margin_type=margin_type)
        return changed_unless_4046(change)


class SpotTrading(_Base):
    market = "SPOT"

    def __init__(self, base_url: str, api_key: str, api_secret: str, timeout_ms: int = 5000) -> None:
        super().__init__()
        self.api = spot_rest(base_url, api_key, api_secret, timeout_ms, retries=0)

    def _exchange_info(self) -> dict:
        return _dict(self.api.exchange_info().data())

    def book(self, symbol: str, depth: int = 5) -> Book:
        with _translated():
            return _book(self.api.depth(symbol=symbol, limit=max(depth, 5)).data(), depth)

    def new_order(self, *, symbol: str, side: str, type: str, qty: Decimal, client_id: str,
                  price: Decimal | None = None, tif: str | None = None, reduce_only: bool = False,
                  stop_price: Decimal | None = None) -> VenueOrder:
        # Spot has no reduce-only flag: an exit is a plain sell of what we hold.
        with _translated():
            res = self.api.new_order(
                symbol=symbol, side=side, type=type, quantity=qty, price=price,
                time_in_force=tif if type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") else None,
                stop_price=stop_price, new_client_order_id=client_id, new_order_resp_type="FULL",
            )
            return _order(res.data())

    def oco(self, *, symbol: str, side: str, qty: Decimal, tp_price: Decimal, sl_stop: Decimal,
            sl_limit: Decimal, list_client_id: str, tp_client_id: str, sl_client_id: str) -> list[VenueOrder]:
        """Native OCO exit for a long (SELL): above leg LIMIT_MAKER take-profit, below leg STOP_LOSS_LIMIT."""
        with _translated():
            res = self.api.order_list_oco(
                symbol=symbol, side=side, quantity=qty, list_client_order_id=list_client_id,
                above_type="LIMIT_MAKER", above_price=tp_price, above_client_order_id=tp_client_id,
                below_type="STOP_LOSS_LIMIT", below_stop_price=sl_stop, below_price=sl_limit,
                below_time_in_force="GTC", below_client_order_id=sl_client_id,
            )
            d = _dict(res.data())
            reports = d.get("orderReports") or d.get("order_reports") or []
            return [_order(o) for o in reports]

    def top_of_book(self, symbol: str) -> Book:
        """Best bid/ask (``/api/v3/ticker/bookTicker``: what the bookTicker stream carries), one level each."""
        with _translated():
            d = _dict(getattr(res := self.api.ticker_book_ticker(symbol=symbol).data(), "actual_instance", res))
        bid, ask = D(d.get("bidPrice")), D(d.get("askPrice"))
        return Book(bids=[(bid, D(d.get("bidQty")))] if bid else [], asks=[(ask, D(d.get("askQty")))] if ask else [])

    def query(self, symbol: str, client_id: str, algo: bool = False) -> VenueOrder:
        with _translated():
            return _order(self.api.get_order(symbol=symbol, orig_client_order_id=client_id).data())

    def cancel(self, symbol: str, client_id: str, algo: bool = False) -> None:
        with _translated():
            self.api.delete_order(symbol=symbol, orig_client_order_id=client_id)

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        with _translated():
            return [_order(o) for o in self.api.get_open_orders(symbol=symbol).data()]

    def trades(self, symbol: str, venue_order_id: str) -> list[dict]:
        with _translated():
            return [_dict(t) for t in self.api.my_trades(symbol=symbol, order_id=int(venue_order_id)).data()]


@dataclass
class Venue:
    fut: FuturesTrading
    spot: SpotTrading

    def for_market(self, market: str) -> FuturesTrading | SpotTrading:
        return self.fut if market == "FUT" else self.spot


def venue_from_settings(settings, account_id: str = "main", timeout_ms: int = 5000) -> Venue:
    """Paper: the local venue's URL; testnet/live: Binance's. Keys from the accounts file."""
    from chimera.venues.accounts import load_accounts

    accounts = {a.account_id: a for a in load_accounts(settings.accounts_file or None, settings.venue)}
    acc = accounts.get(account_id)
    if acc is None or not acc.enabled:
        raise FatalError(f"account {account_id!r} is missing or disabled in the accounts file")
    return venue_for_account(settings, acc, timeout_ms)


def venue_for_account(settings, acc, timeout_ms: int = 5000) -> Venue:
    """The clients of one account (``chimera.venues.accounts.Account``): the caller picked and checked it."""
    if settings.venue == "paper":
        fut_url = spot_url = settings.venue_url
    else:
        fut_url, spot_url = FUTURES_URLS[settings.venue], SPOT_URLS[settings.venue]
    return Venue(FuturesTrading(fut_url, acc.api_key, acc.api_secret, timeout_ms),
                 SpotTrading(spot_url, acc.api_key, acc.api_secret, timeout_ms))
