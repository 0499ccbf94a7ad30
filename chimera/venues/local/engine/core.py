"""The pure, synchronous matching engine. Time comes from an injected clock; no I/O here."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from .futures import FuturesLedger
from .market import FillModel, MarketEvent, SymbolMarket
from .model import FUTURES, SPOT, ZERO, Account, Event, Order, Trade, VenueError
from .rules import ExchangeInfo
from .spot import SpotLedger

CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
FUT_TYPES = {"LIMIT", "MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET"}
SPOT_TYPES = {"LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT", "STOP_LOSS", "TAKE_PROFIT"}
PRICED_TYPES = ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")  # carry a limit price


def missing(name: str) -> VenueError:
    return VenueError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


@dataclass
class Fees:
    futures_maker: Decimal = Decimal("0.0002")
    futures_taker: Decimal = Decimal("0.0005")
    spot_maker: Decimal = Decimal("0.001")
    spot_taker: Decimal = Decimal("0.001")


class Engine(FuturesLedger, SpotLedger):
    def __init__(self, info: ExchangeInfo, clock: Callable[[], int], accounts: list[Account],
                 fees: Fees | None = None, fill_model: FillModel | None = None):
        self.info = info
        self.now = clock
        self.fees = fees or Fees()
        self.fill_model = fill_model or FillModel()
        self.accounts: dict[str, Account] = {a.name: a for a in accounts}
        self.by_key = {a.api_key: a.name for a in accounts}
        self.orders: dict[int, Order] = {}
        self.open_by_symbol: dict[tuple[str, str], dict[int, Order]] = {}
        self.order_lists: dict[int, dict] = {}
        self.trades: list[Trade] = []
        self.income: list = []
        self.transfers: list[dict] = []
        self.funding_log: list[dict] = []
        self.liquidations: list[dict] = []
        self.margin_called: set = set()
        self.counters = {"order": 1_000_000, "trade": 5_000_000, "tran": 9_000_000, "list": 100}
        self.events: list[Event] = []
        self.markets: dict[str, dict[str, SymbolMarket]] = {
            m: {s: SymbolMarket(symbol=s, tick=r.tick, model=self.fill_model) for s, r in info.rules[m].items()}
            for m in (FUTURES, SPOT)}

    # -- plumbing ------------------------------------------------------------------------------
    def next_id(self, kind: str) -> int:
        self.counters[kind] += 1
        return self.counters[kind]

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def drain_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    def account(self, name: str) -> Account:
        return self.accounts[name]

    def open_orders_of(self, market: str, account: str, symbol: str | None = None) -> list[Order]:
        out = []
        for (m, s), book in self.open_by_symbol.items():
            if m == market and (symbol is None or s == symbol):
                out.extend(o for o in book.values() if o.account == account)
        return sorted(out, key=lambda o: o.order_id)

    def new_order_record(self, market: str, account: str, symbol: str, client_id: str, side: str,
                         otype: str, qty: Decimal, price: Decimal = ZERO, stop: Decimal = ZERO,
                         tif: str = "GTC") -> Order:
        now = self.now()
        order = Order(market=market, account=account, symbol=symbol, order_id=self.next_id("order"),
                      client_id=client_id, side=side, type=otype, orig_qty=qty, price=price, stop_price=stop,
                      time_in_force=tif, time=now, update_time=now, orig_type=otype)
        self.orders[order.order_id] = order
        return order

    def _index(self, order: Order) -> None:
        self.open_by_symbol.setdefault((order.market, order.symbol), {})[order.order_id] = order

    def finish_order(self, order: Order, status: str) -> None:
        order.status = status
        order.update_time = self.now()
        self.open_by_symbol.get((order.market, order.symbol), {}).pop(order.order_id, None)
        acc = self.accounts[order.account]
        if order.market == SPOT:
            self.spot_release(acc, order)
        else:
            order.reserved = ZERO
        self.emit(Event(kind="order", market=order.market, account=order.account, time=self.now(),
                        order=copy.copy(order), exec_type="CANCELED" if status == "CANCELED" else status))
        if order.market == SPOT and order.reserved_asset:
            self.spot_account_event(acc, [order.reserved_asset])

    def record_execution(self, order: Order, trade: Trade) -> None:
        order.executed_qty += trade.qty
        order.cum_quote += trade.quote_qty
        order.update_time = self.now()
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self.open_by_symbol.get((order.market, order.symbol), {}).pop(order.order_id, None)
            if order.market == SPOT:
                self.spot_release(self.accounts[order.account], order)
            order.reserved = ZERO
        self.emit(Event(kind="order", market=order.market, account=order.account, time=self.now(),
                        order=copy.copy(order), exec_type="TRADE", trade=trade))
        acc = self.accounts[order.account]
        if order.market == FUTURES:
            self.fut_account_event(acc, "ORDER", [order.symbol])
        else:
            rules = self.info.get(SPOT, order.symbol)
            self.spot_account_event(acc, [rules.base, rules.quote])
            if order.list_id >= 0:
                self.on_list_leg_activity(order)

    # -- queries ---------------------------------------------------------------------------------
    def find_order(self, market: str, account: str, symbol: str, order_id: int | None,
                   client_id: str | None) -> Order:
        self.info.get(market, symbol)
        if order_id is None and not client_id:
            raise VenueError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order_id is not None:
            o = self.orders.get(order_id)
            if o and o.account == account and o.market == market and o.symbol == symbol:
                return o
        else:
            # Prefer an open order; otherwise the most recent one with that client id.
            hits = [o for o in self.orders.values() if o.account == account and o.market == market
                    and o.symbol == symbol and o.client_id == client_id]
            if hits:
                return sorted(hits, key=lambda o: (o.is_open, o.order_id))[-1]
        raise VenueError(-2013, "Order does not exist.")

    def cancel(self, market: str, account: str, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        try:
            order = self.find_order(market, account, symbol, order_id, client_id)
        except VenueError as exc:
            if exc.code == -2013:
                raise VenueError(-2011, "Unknown order sent.") from None
            raise
        if not order.is_open:
            raise VenueError(-2011, "Unknown order sent.")
        if order.list_id >= 0 and market == SPOT:
            self.cancel_list(account, symbol, order.list_id, None)
        else:
            self.finish_order(order, "CANCELED")
        return order

    def cancel_all(self, market: str, account: str, symbol: str) -> list[Order]:
        self.info.get(market, symbol)
        done = []
        for o in self.open_orders_of(market, account, symbol):
            if o.is_open:
                self.cancel(market, account, symbol, o.order_id, None)
                done.append(o)
        return done

    # -- placement -------------------------------------------------------------------------------
    def _common(self, market: str, account: str, symbol: str, side: str | None, otype: str | None,
                client_id: str | None) -> str:
        self.info.get(market, symbol)
        if not side:
            raise missing("side")
        if side not in ("BUY", "SELL"):
            raise VenueError(-1117, "Invalid side.")
        if not otype:
            raise missing("type")
        if otype not in (FUT_TYPES if market == FUTURES else SPOT_TYPES):
            raise VenueError(-1116, "Invalid orderType.")
        if client_id is None or client_id == "":
            prefix = "web_" if market == FUTURES else "x-"
            return f"{prefix}{self.next_id('order')}"
        if not CLIENT_ID_RE.match(client_id):
            raise VenueError(-4015 if market == FUTURES else -1100,
                             "Client order id is not valid." if market == FUTURES
                             else "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[a-zA-Z0-9-_]{1,36}$'.")
        for o in self.open_orders_of(market, account, symbol):
            if o.client_id == client_id:
                if market == FUTURES:
                    raise VenueError(-4116, "ClientOrderId is duplicated.")
                raise VenueError(-2010, "Duplicate order sent.")
        return client_id

    def place_futures(self, account: str, symbol: str, side: str | None, otype: str | None, *,
                      qty: Decimal | None = None, price: Decimal | None = None, stop_price: Decimal | None = None,
                      tif: str | None = None, reduce_only: bool = False, close_position: bool = False,
                      working_type: str | None = None, client_id: str | None = None) -> tuple[Order, Order]:
        """Returns (snapshot right after acceptance, live order after any immediate execution)."""
        client_id = self._common(FUTURES, account, symbol, side, otype, client_id)
        rules = self.info.get(FUTURES, symbol)
        market = self.markets[FUTURES][symbol]
        acc = self.accounts[account]
        pos = acc.position(symbol)
        is_stop = otype in ("STOP_MARKET", "TAKE_PROFIT_MARKET")
        if otype == "LIMIT":
            if not tif:
                raise missing("timeInForce")
            if tif not in ("GTC", "IOC", "FOK", "GTX"):
                raise VenueError(-1115, "Invalid timeInForce.")
            if price is None:
                raise missing("price")
            rules.check_price(price)
        elif price is not None and otype != "LIMIT":
            raise VenueError(-1106, "Parameter 'price' sent when not required.")
        if is_stop:
            if stop_price is None:
                raise missing("stopPrice")
            rules.check_price(stop_price, "stopPrice")
        if close_position:
            if not is_stop:
                raise VenueError(-1106, "Parameter 'closePosition' sent when not required.")
            if qty is not None:
                raise VenueError(-1106, "Parameter 'quantity' sent when not required.")
            if reduce_only:
                raise VenueError(-1106, "Parameter 'reduceOnly' sent when not required.")
            qty = ZERO
        elif qty is None:
            raise missing("quantity")
        else:
            rules.check_qty(qty, is_market=otype != "LIMIT")
        wt = working_type or "CONTRACT_PRICE"
        if wt not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise VenueError(-1130, "Data sent for parameter 'workingType' is not valid.")
        ref = price if otype == "LIMIT" else (stop_price if is_stop else market.reference(side))
        if not ref:
            raise VenueError(-2010, "No market data yet for this symbol; the replay has not reached it.")
        if not close_position:
            rules.check_notional(ref * qty, otype != "LIMIT", reduce_only)
        if reduce_only and not self._reducible(acc, symbol, side):
            raise VenueError(-2022, "ReduceOnly Order is rejected.")
        if otype == "LIMIT" and tif == "GTX" and self._crosses(market, side, price):
            raise VenueError(-5022, "Due to the order could not be executed as maker, the Post Only order "
                                    "will be rejected. The order will not be recorded in the order history")
        if is_stop and self._stop_hit(otype, side, stop_price, self._trigger_price(market, wt)):
            raise VenueError(-2021, "Order would immediately trigger.")
        reserve = ZERO
        if not reduce_only and not close_position:
            lev = acc.leverage.get(symbol, pos.leverage)
            # Only the part that would grow the position needs fresh margin.
            opposite = abs(pos.amt) if pos.amt and (pos.amt > 0) != (side == "BUY") else ZERO
            growing = max(qty - opposite, ZERO)
            reserve = growing * ref / lev
            if reserve > self.fut_available(acc):
                raise VenueError(-2019, "Margin is insufficient.")
        order = self.new_order_record(FUTURES, account, symbol, client_id, side, otype, qty,
                                      price=price or ZERO, stop=stop_price or ZERO, tif=tif or "GTC")
        order.reduce_only, order.close_position, order.working_type = reduce_only or close_position, close_position, wt
        # Binance holds margin for resting limits only; stops take margin when they trigger.
        order.reserved = reserve if otype == "LIMIT" else ZERO
        self._index(order)
        self.emit(Event(kind="order", market=FUTURES, account=account, time=self.now(), order=copy.copy(order),
                        exec_type="NEW"))
        ack = copy.copy(order)
        if not is_stop:
            self._execute_taker(order)
        return ack, order

    def place_spot(self, account: str, symbol: str, side: str | None, otype: str | None, *,
                   qty: Decimal | None = None, quote_qty: Decimal | None = None, price: Decimal | None = None,
                   stop_price: Decimal | None = None, tif: str | None = None, client_id: str | None = None,
                   list_id: int = -1, reserve: bool = True) -> tuple[Order, Order]:
        client_id = self._common(SPOT, account, symbol, side, otype, client_id)
        rules = self.info.get(SPOT, symbol)
        rules.check_type(otype)
        market = self.markets[SPOT][symbol]
        acc = self.accounts[account]
        needs_price = otype in PRICED_TYPES
        needs_stop = otype in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT", "STOP_LOSS", "TAKE_PROFIT")
        if otype in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
            if not tif:
                raise missing("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise VenueError(-1115, "Invalid timeInForce.")
        if needs_price:
            if price is None:
                raise missing("price")
            rules.check_price(price)
        if needs_stop:
            if stop_price is None:
                raise missing("stopPrice")
            rules.check_price(stop_price, "stopPrice")
        ref = market.reference(side)
        if otype == "MARKET" and qty is None and quote_qty is not None:
            if not ref:
                raise VenueError(-2010, "No market data yet for this symbol; the replay has not reached it.")
            qty = (quote_qty / ref // rules.market_step) * rules.market_step if rules.market_step else quote_qty / ref
        if qty is None:
            raise missing("quantity")
        rules.check_qty(qty, is_market=otype == "MARKET")
        est = price or stop_price or ref
        if not est:
            raise VenueError(-2010, "No market data yet for this symbol; the replay has not reached it.")
        rules.check_notional(est * qty, otype in ("MARKET", "STOP_LOSS", "TAKE_PROFIT"))
        if otype == "LIMIT_MAKER" and self._crosses(market, side, price):
            raise VenueError(-2010, "Order would immediately match and take.")
        if needs_stop and self._stop_hit(otype, side, stop_price, market.last):
            raise VenueError(-2010, "Stop price would trigger immediately.")
        order = self.new_order_record(SPOT, account, symbol, client_id, side, otype, qty,
                                      price=price or ZERO, stop=stop_price or ZERO, tif=tif or "GTC")
        order.list_id = list_id
        if reserve:
            self.spot_reserve(acc, order, rules, est)
        self._index(order)
        self.emit(Event(kind="order", market=SPOT, account=account, time=self.now(), order=copy.copy(order),
                        exec_type="NEW"))
        if order.reserved_asset:
            self.spot_account_event(acc, [order.reserved_asset])
        ack = copy.copy(order)
        if not needs_stop:
            self._execute_taker(order)
        return ack, order

    def place_oco(self, account: str, symbol: str, side: str | None, qty: Decimal | None, above: dict,
                  below: dict, list_client_id: str | None) -> dict:
        if qty is None:
            raise missing("quantity")
        for leg, name in ((above, "aboveType"), (below, "belowType")):
            if not leg.get("type"):
                raise missing(name)
        rules = self.info.get(SPOT, symbol)
        rules.check_oco()
        acc = self.accounts[account]
        if side == "BUY":
            top = max((leg.get("price") or leg.get("stop_price") or ZERO) for leg in (above, below))
            need, asset = top * qty, rules.quote
        else:
            need, asset = qty, rules.base
        if acc.spot_free(asset) < need:
            raise VenueError(-2010, "Account has insufficient balance for requested action.")
        list_id = self.next_id("list")
        legs: list[Order] = []
        try:
            for leg in (below, above):
                _, order = self.place_spot(account, symbol, side, leg["type"], qty=qty, price=leg.get("price"),
                                           stop_price=leg.get("stop_price"), tif=leg.get("tif"),
                                           client_id=leg.get("client_id"), list_id=list_id, reserve=False)
                legs.append(order)
        except VenueError:
            # Binance validates a list atomically: a bad second leg must not leave the first one live.
            for order in legs:
                self.open_by_symbol.get((SPOT, symbol), {}).pop(order.order_id, None)
                self.orders.pop(order.order_id, None)
            self.events = [e for e in self.events if not (e.order and e.order.list_id == list_id)]
            raise
        # One lock covers both legs; it moves to whichever leg executes (see spot_fill).
        acc.spot_add(asset, free=-need, locked=need)
        legs[0].reserved, legs[0].reserved_asset = need, asset
        self.spot_account_event(acc, [asset])
        lst = {"orderListId": list_id, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
               "listOrderStatus": "EXECUTING", "listClientOrderId": list_client_id or f"oco-{list_id}",
               "transactionTime": self.now(), "symbol": symbol, "account": account,
               "orderIds": [o.order_id for o in legs]}
        self.order_lists[list_id] = lst
        self.list_event(list_id)
        return lst

    # -- matching --------------------------------------------------------------------------------
    def _crosses(self, market: SymbolMarket, side: str, price: Decimal) -> bool:
        if side == "BUY":
            ask = market.best_ask()
            return bool(ask) and price >= ask
        bid = market.best_bid()
        return bool(bid) and price <= bid

    @staticmethod
    def _stop_hit(otype: str, side: str, stop: Decimal, px: Decimal) -> bool:
        if not px:
            return False
        is_stop_loss = otype in ("STOP_MARKET", "STOP_LOSS_LIMIT", "STOP_LOSS")
        # A buy stop-loss fires on a rise, a buy take-profit on a fall; sells mirror that.
        rising = is_stop_loss == (side == "BUY")
        return px >= stop if rising else px <= stop

    @staticmethod
    def _reducible(acc: Account, symbol: str, side: str) -> Decimal:
        """How much a reduce-only order on `side` may trade: the size of the opposite position, else 0."""
        amt = acc.position(symbol).amt
        return ZERO if amt == 0 or (amt > 0) == (side == "BUY") else abs(amt)

    @staticmethod
    def _trigger_price(market: SymbolMarket, working_type: str) -> Decimal:
        return market.mark_or_last if working_type == "MARK_PRICE" else market.last

    def _fill(self, order: Order, price: Decimal, qty: Decimal, maker: bool) -> None:
        acc = self.accounts[order.account]
        if order.market == FUTURES:
            trade = self.fut_fill(acc, order, price, qty, maker)
        else:
            trade = self.spot_fill(acc, order, price, qty, maker)
        self.record_execution(order, trade)

    def _execute_taker(self, order: Order) -> None:
        market = self.markets[order.market][order.symbol]
        rules = self.info.get(order.market, order.symbol)
        qty = order.remaining
        if order.market == FUTURES and order.reduce_only:
            room = self._reducible(self.accounts[order.account], order.symbol, order.side)
            if not room:
                self.finish_order(order, "EXPIRED")
                return
            if order.close_position:
                order.orig_qty, qty = order.executed_qty + room, room
            else:
                qty = min(qty, room)
        is_limit = order.type in PRICED_TYPES
        if is_limit and not self._crosses(market, order.side, order.price):
            if order.time_in_force in ("IOC", "FOK"):
                self.finish_order(order, "EXPIRED")
            return
        legs = market.taker_fills(order.side, qty, self.fill_model, rules.tick,
                                  limit=order.price if is_limit else None)
        filled = sum((q for _, q in legs), ZERO)
        if order.time_in_force == "FOK" and is_limit and filled < qty:
            self.finish_order(order, "EXPIRED")
            return
        for price, leg_qty in legs:
            self._fill(order, price, leg_qty, maker=False)
        if order.is_open and (not is_limit or order.time_in_force in ("IOC", "FOK")):
            self.finish_order(order, "EXPIRED")

    def on_market(self, ev: MarketEvent) -> None:
        book = self.markets.get(ev.market, {})
        market = book.get(ev.symbol)
        if market is None:
            return
        if ev.kind == "funding":
            self.settle_funding(ev.symbol, ev.rate)
            return
        market.apply(ev)
        if ev.kind in ("trade", "book"):
            self._match_resting(ev, market)
        if ev.market == FUTURES and ev.kind in ("trade", "mark"):
            self._trigger_stops(ev.market, ev.symbol, market, mark_event=ev.kind == "mark")
            if ev.kind == "mark" or not market.mark:
                self.check_liquidations(ev.symbol)
        elif ev.market == SPOT and ev.kind == "trade":
            self._trigger_stops(ev.market, ev.symbol, market, mark_event=False)

    def _match_resting(self, ev: MarketEvent, market: SymbolMarket) -> None:
        resting = self.open_by_symbol.get((ev.market, ev.symbol))
        if not resting:
            return
        touch = self.fill_model.fill_mode == "touch"
        for order in list(resting.values()):
            if not order.is_open or order.is_stop or order.type not in PRICED_TYPES:
                continue
            if ev.kind == "trade":
                px = ev.price
            else:
                px = ev.ask if order.side == "BUY" else ev.bid
                if not px:
                    continue
            diff = (order.price - px) if order.side == "BUY" else (px - order.price)
            if not (diff > 0 or (touch and diff == 0)):
                continue
            qty = order.remaining
            if order.market == FUTURES and order.reduce_only:
                room = self._reducible(self.accounts[order.account], order.symbol, order.side)
                if not room:
                    self.finish_order(order, "EXPIRED")
                    continue
                qty = min(qty, room)
            self._fill(order, order.price, qty, maker=True)

    def _trigger_stops(self, market_name: str, symbol: str, market: SymbolMarket, mark_event: bool) -> None:
        resting = self.open_by_symbol.get((market_name, symbol))
        if not resting:
            return
        for order in list(resting.values()):
            if not order.is_open or not order.is_stop:
                continue
            if market_name == FUTURES:
                if (order.working_type == "MARK_PRICE") != mark_event and market.mark:
                    continue
                px = self._trigger_price(market, order.working_type)
            else:
                px = market.last
            if not self._stop_hit(order.type, order.side, order.stop_price, px):
                continue
            order.triggered = True
            order.update_time = self.now()
            if order.market == SPOT and order.list_id >= 0:
                self.on_list_leg_activity(order)
            if order.type not in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
                order.type = "MARKET"
            self._execute_taker(order)
