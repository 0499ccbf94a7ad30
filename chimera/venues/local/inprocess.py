"""The local venue called in-process: the Binance adapter's interface over the engine, no HTTP/WS/SDK.

The in-process runtime (backtests, the parity test, dry-runs) needs the venue the handlers talk to
in paper mode, minus the network. ``InProcessExchange`` owns one ``Engine`` on a clock the caller
controls (the runtime's ``ManualClock``: event time) and hands out ``Venue(fut, spot)`` objects
with exactly the methods of ``chimera.venues.binance.adapter.FuturesTrading`` / ``SpotTrading``.

Each call runs the **same operation the venue server runs** for that endpoint (the functions of
``server/rest_*.py``, with the parameters the adapter gives the SDK), and its answer goes through
the adapter's own normalisation (``_order``, ``_book``, ``_filters_from``). Refusals become the
same Chimera errors as over the SDK (``adapter.rejection``: -2013/-2011 ``OrderNotFound``,
-4116 ``AlreadyAccepted``, anything else ``VenueRejected`` with Binance's code and message), so a
handler cannot tell the two apart. Signatures, rate limits, faults and lost replies are protocol
matters and do not exist here.

User data: ``drain_reports()`` turns the engine's events into the ``VenueReport`` messages S1
would publish (same payload builder as the WebSocket push, same normaliser as S1, same
idempotency key), in engine order.
"""

from __future__ import annotations

import bisect
import json
import typing
from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import cache
from typing import Any

from binance_sdk_derivatives_trading_usds_futures.rest_api import (
    DerivativesTradingUsdsFuturesRestAPI as FutApi,
)
from binance_sdk_spot.rest_api import SpotRestAPI as SpotApi

from chimera.schemas.messages import VenueReport
from chimera.venues.binance import user_data as ud
from chimera.venues.binance.adapter import (
    Book,
    Venue,
    VenueOrder,
    _Base,
    _book,
    _dict,
    _order,
    changed_unless_4046,
    rejection,
)

from .engine import Engine, ExchangeInfo, Fees, FillModel, MarketEvent
from .engine.market import event_from_json
from .engine.model import FUTURES, SPOT, VenueError
from .replay import DataSpec, build_feed
from .replay.feed import Feed
from .server import rest_algo, rest_futures, rest_spot
from .server.app import load_accounts
from .server.auth import Params
from .server.formats import user_event

MARKETS = {"FUT": FUTURES, "SPOT": SPOT}


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        return format(v, "f")
    return str(v)


@cache
def _sdk_model(api: type, method: str) -> type | None:
    """The response model the SDK declares for ``api.method`` (``ApiResponse[Model]``)."""
    args = typing.get_args(typing.get_type_hints(getattr(api, method)).get("return"))
    return args[0] if args else None


def _as_sdk(model: type | None, raw: Any) -> Any:
    """What ``ApiResponse.data()`` hands the adapter for this JSON answer (binance_common's parse
    rules: the wire JSON, then the declared model; the raw payload when it does not fit)."""
    parsed = json.loads(json.dumps(raw, default=str))
    if model is None or (isinstance(parsed, list) and parsed and isinstance(parsed[0], list)):
        return parsed
    try:
        if isinstance(parsed, list) or hasattr(model, "from_dict"):
            return model.from_dict(parsed)
        return model.model_validate(parsed)
    except Exception:  # noqa: BLE001 - the SDK falls back to the raw payload the same way
        return parsed


class _Clock:
    """What the protocol functions read from the server's ReplayClock, over the caller's clock."""

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now
        self.processed = 0

    @property
    def time_ms(self) -> int:
        return self._now()


class InProcessExchange:
    """One engine, its market data and its clock. ``venue(account)`` → the adapter-shaped client.

    ``clock``: an object with ``now_ms()`` (the runtime's ``ManualClock``), moved forward to each
    market event's time by ``on_market`` / ``advance_to``. ``data``: ``DataSpec`` sources (the
    venue's loaders); without them, market events are fed by the caller (``on_market``).
    """

    def __init__(self, clock, *, data: Iterable[DataSpec] = (), start_ms: int | None = None,
                 end_ms: int | None = None, accounts_file: str | None = None, symbols: list[str] | None = None,
                 fees: Fees | None = None, fill_model: FillModel | None = None, feed: Feed | None = None) -> None:
        self.time = clock  # the caller's clock; ``self.clock`` is what the protocol functions read
        self.clock = _Clock(clock.now_ms)
        self.info = ExchangeInfo.load(symbols=symbols)
        specs = list(data)
        self.feed = feed if feed is not None else build_feed(specs, start_ms, end_ms) if specs else Feed(events=[])
        self.engine = Engine(self.info, clock.now_ms, load_accounts(accounts_file), fees, fill_model)
        self._clients: dict[str, Venue] = {}
        self._funding_times: dict[str, list[int]] = {}

    # -- the adapter-shaped clients ----------------------------------------------------------------
    def venue(self, account: str = "main") -> Venue:
        """``Venue(fut, spot)`` for one account (its API key's account at the server)."""
        if account not in self.engine.accounts:
            raise KeyError(f"no venue account {account!r}; accounts: {sorted(self.engine.accounts)}")
        v = self._clients.get(account)
        if v is None:
            v = self._clients[account] = Venue(InProcessFutures(self, account), InProcessSpot(self, account))
        return v

    def venues(self):
        """``ctx.venues`` for the in-process runtime: every account's client, e.g.
        ``InProcessRuntime(..., ports=memory_ports(clock, settings, venues=ex.venues()))``."""
        from chimera.ports.venues import Venues

        return Venues(clients={name: self.venue(name) for name in sorted(self.engine.accounts)})

    def call(self, api: type, method: str, fn, account: str | None, **params: Any) -> Any:
        """Run one protocol operation and read its answer as the SDK's ``api.method`` would.

        A refusal raises what the SDK path raises.
        """
        p = Params({k: _param(v) for k, v in params.items() if v is not None})
        try:
            raw = fn(self, p, account)
        except VenueError as exc:
            raise rejection(exc.code, exc.msg) from None
        return _as_sdk(_sdk_model(api, method), raw)

    # -- what the protocol functions read from a server: ``engine``, ``info``, ``clock``, ``feed`` and:
    def _funding_info(self, symbol: str, now: int) -> tuple[str, int]:
        """The next funding (rate, time) after ``now``: asked on every mark frame, so a binary search."""
        series = self.feed.funding.get(symbol) or []
        times = self._funding_times.get(symbol)
        if times is None or len(times) != len(series):
            times = self._funding_times[symbol] = [ev.time for ev in series]
        i = bisect.bisect_right(times, now)
        if i < len(series):
            return format(series[i].rate, "f"), series[i].time
        return "0", 0

    # -- market data and time ------------------------------------------------------------------------
    def on_market(self, ev: MarketEvent) -> None:
        """Apply one market event at its time (the clock moves forward to it, never back)."""
        self.time.set(ev.time)
        self.engine.on_market(ev)
        self.clock.processed += 1

    def inject(self, *events: dict) -> None:
        """Market events as ``POST /chimera/v1/market`` takes them (drills, tests)."""
        for raw in events:
            self.on_market(event_from_json(raw, self.time.now_ms()))

    def advance_to(self, t_ms: int) -> int:
        """Replay the loaded data up to and including ``t_ms``; returns how many events were applied."""
        n = 0
        while (ev := self.feed.peek()) is not None and ev.time <= t_ms:
            self.on_market(self.feed.pop())
            n += 1
        self.time.set(t_ms)
        return n

    def next_time(self) -> int | None:
        ev = self.feed.peek()
        return ev.time if ev else None

    def deleverage(self, account: str, symbol: str, qty: Decimal | None = None,
                   price: Decimal | None = None) -> None:
        """Auto-deleverage a position now (``POST /chimera/v1/adl``); see ``Engine.deleverage``."""
        self.engine.deleverage(account, symbol, qty, price)

    def wallet_history(self, account: str = "main", start_ms: int | None = None, end_ms: int | None = None) -> dict:
        """Wallet movements by kind (``GET /chimera/v1/ledger``'s ``wallet``): the books' identity."""
        return self.engine.wallet_history(account, start_ms, end_ms)

    # -- user data ---------------------------------------------------------------------------------
    def drain_reports(self) -> list[tuple[VenueReport, str, str]]:
        """``(report, idempotency key, account)`` for each order event since the last drain, as S1
        publishes them on ``venue:{reports}`` (account and funding updates carry no report)."""
        out = []
        for ev in self.engine.drain_events():
            rep = ud.normalize_user_event(user_event(self.engine, ev))
            if rep is None:
                continue
            key = f"vr:{ev.account}:{rep.market}:{rep.symbol}:{ud.dedupe_member(rep)}"
            out.append((rep, key, ev.account))
        return out


class _InProcessBase(_Base):
    api: type

    def __init__(self, exchange: InProcessExchange, account: str) -> None:
        super().__init__()
        self.x = exchange
        self.account = account

    def _call(self, method: str, fn, **params: Any) -> Any:
        """``fn``: the server's operation; ``method``: the SDK call the adapter makes for it."""
        return self.x.call(self.api, method, fn, self.account, **params)


class InProcessFutures(_InProcessBase):
    """The methods of ``adapter.FuturesTrading``, same parameters and answers."""

    market = "FUT"
    api = FutApi

    def _exchange_info(self) -> dict:
        return _dict(self._call("exchange_information", rest_futures.exchange_info))

    def book(self, symbol: str, depth: int = 5) -> Book:
        return _book(self._call("order_book", lambda s, p, a: rest_futures.depth(s, p, FUTURES), symbol=symbol,
                                limit=max(depth, 5)), depth)

    def new_order(self, *, symbol: str, side: str, type: str, qty: Decimal, client_id: str,
                  price: Decimal | None = None, tif: str | None = None, reduce_only: bool = False) -> VenueOrder:
        return _order(self._call(
            "new_order", rest_futures.new_order, symbol=symbol, side=side, type=type, quantity=qty, price=price,
            timeInForce=tif if type == "LIMIT" else None, reduceOnly="true" if reduce_only else None,
            newClientOrderId=client_id, newOrderRespType="RESULT" if type == "MARKET" else None))

    def new_stop(self, *, symbol: str, side: str, type: str, qty: Decimal | None, trigger: Decimal,
                 client_id: str, close_position: bool = False) -> VenueOrder:
        return _order(self._call(
            "new_algo_order", rest_algo.new_algo, algoType="CONDITIONAL", symbol=symbol, side=side, type=type, triggerPrice=trigger,
            quantity=None if close_position else qty, reduceOnly=None if close_position else "true",
            closePosition="true" if close_position else None, workingType="MARK_PRICE", clientAlgoId=client_id),
            algo=True)

    def query(self, symbol: str, client_id: str, algo: bool = False) -> VenueOrder:
        if algo:
            return _order(self._call("query_algo_order", rest_algo.query_algo, clientAlgoId=client_id), algo=True)
        return _order(self._call("query_order", rest_futures.query_order, symbol=symbol, origClientOrderId=client_id))

    def cancel(self, symbol: str, client_id: str, algo: bool = False) -> None:
        if algo:
            self._call("cancel_algo_order", rest_algo.cancel_algo, clientAlgoId=client_id)
        else:
            self._call("cancel_order", rest_futures.cancel_order, symbol=symbol, origClientOrderId=client_id)

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return [_order(o) for o in self._call("current_all_open_orders", rest_futures.open_orders, symbol=symbol)]

    def open_algo_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return [_order(o, algo=True) for o in self._call("current_all_algo_open_orders", rest_algo.open_algos, symbol=symbol)]

    def position_risk(self, symbol: str | None = None) -> list[dict]:
        return [_dict(p) for p in self._call("position_information_v2",
                                             lambda s, p, a: rest_futures.position_risk(s, p, a, 2), symbol=symbol)]

    def force_orders(self, symbol: str, start_ms: int | None = None) -> list[dict]:
        return [_dict(o) for o in self._call("users_force_orders", rest_futures.force_orders, symbol=symbol,
                                             startTime=start_ms, limit=100)]

    def trades(self, symbol: str, venue_order_id: str) -> list[dict]:
        return [_dict(t) for t in self._call("account_trade_list", rest_futures.user_trades, symbol=symbol,
                                             orderId=int(venue_order_id))]

    def available_balance(self, asset: str = "USDT") -> Decimal:
        rows = [_dict(b) for b in self._call("futures_account_balance_v3", rest_futures.balance)]
        return next((ud.D(b.get("availableBalance")) for b in rows if b.get("asset") == asset), Decimal(0))

    def set_leverage(self, symbol: str, leverage: int) -> dict:
        return _dict(self._call("change_initial_leverage", rest_futures.leverage, symbol=symbol,
                                leverage=int(leverage)))

    def set_margin_type(self, symbol: str, margin_type: str) -> bool:
        return changed_unless_4046(lambda: self._call("change_margin_type", rest_futures.margin_type, symbol=symbol,
                                                      marginType=margin_type))


class InProcessSpot(_InProcessBase):
    """The methods of ``adapter.SpotTrading``, same parameters and answers."""

    market = "SPOT"
    api = SpotApi

    def _exchange_info(self) -> dict:
        return _dict(self._call("exchange_info", rest_spot.exchange_info))

    def book(self, symbol: str, depth: int = 5) -> Book:
        return _book(self._call("depth", lambda s, p, a: rest_futures.depth(s, p, SPOT), symbol=symbol,
                                limit=max(depth, 5)), depth)

    def new_order(self, *, symbol: str, side: str, type: str, qty: Decimal, client_id: str,
                  price: Decimal | None = None, tif: str | None = None, reduce_only: bool = False,
                  stop_price: Decimal | None = None) -> VenueOrder:
        return _order(self._call(
            "new_order", rest_spot.new_order, symbol=symbol, side=side, type=type, quantity=qty, price=price,
            timeInForce=tif if type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") else None,
            stopPrice=stop_price, newClientOrderId=client_id, newOrderRespType="FULL"))

    def oco(self, *, symbol: str, side: str, qty: Decimal, tp_price: Decimal, sl_stop: Decimal,
            sl_limit: Decimal, list_client_id: str, tp_client_id: str, sl_client_id: str) -> list[VenueOrder]:
        d = self._call("order_list_oco", rest_spot.new_oco, symbol=symbol, side=side, quantity=qty, listClientOrderId=list_client_id,
                       aboveType="LIMIT_MAKER", abovePrice=tp_price, aboveClientOrderId=tp_client_id,
                       belowType="STOP_LOSS_LIMIT", belowStopPrice=sl_stop, belowPrice=sl_limit,
                       belowTimeInForce="GTC", belowClientOrderId=sl_client_id)
        d = _dict(d)
        return [_order(o) for o in d.get("orderReports") or d.get("order_reports") or []]

    def top_of_book(self, symbol: str) -> Book:
        res = self._call("ticker_book_ticker", lambda s, p, a: rest_futures.book_ticker(s, p, SPOT), symbol=symbol)
        d = _dict(getattr(res, "actual_instance", res))
        bid, ask = ud.D(d.get("bidPrice")), ud.D(d.get("askPrice"))
        return Book(bids=[(bid, ud.D(d.get("bidQty")))] if bid else [],
                    asks=[(ask, ud.D(d.get("askQty")))] if ask else [])

    def query(self, symbol: str, client_id: str, algo: bool = False) -> VenueOrder:
        return _order(self._call("get_order", rest_spot.query_order, symbol=symbol, origClientOrderId=client_id))

    def cancel(self, symbol: str, client_id: str, algo: bool = False) -> None:
        self._call("delete_order", rest_spot.cancel_order, symbol=symbol, origClientOrderId=client_id)

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return [_order(o) for o in self._call("get_open_orders", rest_spot.open_orders, symbol=symbol)]

    def trades(self, symbol: str, venue_order_id: str) -> list[dict]:
        return [_dict(t) for t in self._call("my_trades", rest_spot.my_trades, symbol=symbol,
                                             orderId=int(venue_order_id))]


__all__ = ["InProcessExchange", "InProcessFutures", "InProcessSpot"]
