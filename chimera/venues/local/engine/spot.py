"""Spot accounting: balances with free/locked, fees in the received asset, OCO lists."""

from __future__ import annotations

from decimal import Decimal

from .model import SPOT, ZERO, Account, Event, Order, Trade, VenueError, q8

INSUFFICIENT = "Account has insufficient balance for requested action."


class SpotLedger:
    """Mixin for Engine."""

    def spot_reserve(self, acc: Account, order: Order, rules, est_price: Decimal) -> None:
        if order.side == "BUY":
            price = order.price or order.stop_price or est_price
            need, asset = price * order.orig_qty, rules.quote
        else:
            need, asset = order.orig_qty, rules.base
        if acc.spot_free(asset) < need:
            raise VenueError(-2010, INSUFFICIENT)
        if order.type == "MARKET":
            return  # consumed at once; nothing stays locked
        acc.spot_add(asset, free=-need, locked=need)
        order.reserved, order.reserved_asset = need, asset

    def spot_release(self, acc: Account, order: Order) -> None:
        if order.reserved:
            acc.spot_add(order.reserved_asset, free=order.reserved, locked=-order.reserved)
            order.reserved = ZERO

    def spot_fill(self, acc: Account, order: Order, price: Decimal, qty: Decimal, maker: bool) -> Trade:
        rules = self.info.get(SPOT, order.symbol)
        rate = self.fees.spot_maker if maker else self.fees.spot_taker
        cost = price * qty
        release = ZERO
        if order.list_id >= 0 and not order.reserved:
            for oid in self.order_lists.get(order.list_id, {}).get("orderIds", []):
                sibling = self.orders[oid]
                if sibling is not order and sibling.reserved:
                    order.reserved, order.reserved_asset = sibling.reserved, sibling.reserved_asset
                    sibling.reserved = ZERO
        if order.reserved and order.remaining > 0:
            release = order.reserved * qty / order.remaining
            order.reserved -= release
        if order.side == "BUY":
            fee, fee_asset = q8(qty * rate), rules.base
            acc.spot_add(rules.quote, free=release - cost, locked=-release)
            acc.spot_add(rules.base, free=qty - fee)
        else:
            fee, fee_asset = q8(cost * rate), rules.quote
            acc.spot_add(rules.base, free=-(qty - release), locked=-release)
            acc.spot_add(rules.quote, free=cost - fee)
        trade = Trade(market=SPOT, account=acc.name, symbol=order.symbol, trade_id=self.next_id("trade"),
                      order_id=order.order_id, side=order.side, price=price, qty=qty, quote_qty=cost,
                      commission=fee, commission_asset=fee_asset, realized_pnl=ZERO, maker=maker,
                      time=self.now(), order_list_id=order.list_id)
        self.trades.append(trade)
        return trade

    def spot_account_event(self, acc: Account, assets: list[str]) -> None:
        rows = [(a, *acc.spot.get(a, [ZERO, ZERO])) for a in assets]
        self.emit(Event(kind="account", market=SPOT, account=acc.name, time=self.now(),
                        reason="outboundAccountPosition", balances=rows))

    # -- OCO ---------------------------------------------------------------------------------
    def list_event(self, list_id: int) -> None:
        lst = self.order_lists[list_id]
        self.emit(Event(kind="list", market=SPOT, account=lst["account"], time=self.now(), data=dict(lst)))

    def on_list_leg_activity(self, order: Order) -> None:
        """A leg filled or triggered: the other leg expires, as on Binance."""
        lst = self.order_lists.get(order.list_id)
        if lst is None or lst["listOrderStatus"] == "ALL_DONE":
            return
        for oid in lst["orderIds"]:
            other = self.orders[oid]
            if oid != order.order_id and other.is_open:
                self.finish_order(other, "EXPIRED")
        lst["listStatusType"] = "ALL_DONE"
        lst["listOrderStatus"] = "ALL_DONE"
        lst["transactionTime"] = self.now()
        self.list_event(order.list_id)

    def cancel_list(self, account: str, symbol: str, list_id: int | None, list_client_id: str | None) -> dict:
        lst = None
        for candidate in self.order_lists.values():
            if candidate["account"] != account or candidate["symbol"] != symbol:
                continue
            if (list_id is not None and candidate["orderListId"] == list_id) or (
                    list_client_id and candidate["listClientOrderId"] == list_client_id):
                lst = candidate
                break
        if lst is None or lst["listOrderStatus"] == "ALL_DONE":
            raise VenueError(-2011, "Order list does not exist.")
        for oid in lst["orderIds"]:
            if self.orders[oid].is_open:
                self.finish_order(self.orders[oid], "CANCELED")
        lst["listStatusType"] = "ALL_DONE"
        lst["listOrderStatus"] = "ALL_DONE"
        lst["transactionTime"] = self.now()
        self.list_event(lst["orderListId"])
        return lst

    def find_list(self, account: str, list_id: int | None, list_client_id: str | None) -> dict:
        for lst in self.order_lists.values():
            if lst["account"] != account:
                continue
            if (list_id is not None and lst["orderListId"] == list_id) or (
                    list_client_id and lst["listClientOrderId"] == list_client_id):
                return lst
        raise VenueError(-2011, "Order list does not exist.")
