"""USDT-M futures accounting: isolated margin, realized PnL, funding, liquidation."""

from __future__ import annotations

from decimal import Decimal

from .model import FUTURES, ZERO, Account, Event, Income, Order, Position, Trade, q8

QUOTE = "USDT"


def liquidation_price(pos: Position, mmr: Decimal) -> Decimal:
    """Mark price at which isolated margin + unrealized PnL falls to maintenance margin."""
    if pos.amt == 0:
        return ZERO
    q = abs(pos.amt)
    m = pos.isolated_margin
    if pos.amt > 0:
        price = (q * pos.entry_price - m) / (q * (1 - mmr))
    else:
        price = (m + q * pos.entry_price) / (q * (1 + mmr))
    return max(price, ZERO)


def bankruptcy_price(pos: Position) -> Decimal:
    q = abs(pos.amt)
    if pos.amt > 0:
        return max(pos.entry_price - pos.isolated_margin / q, ZERO)
    return pos.entry_price + pos.isolated_margin / q


class FuturesLedger:
    """Mixin for Engine; relies on self.accounts, self.markets, self.emit, self.rules, ids."""

    def fut_wallet(self, acc: Account) -> Decimal:
        return acc.futures_wallet.get(QUOTE, ZERO)

    def fut_add_wallet(self, acc: Account, amount: Decimal) -> None:
        acc.futures_wallet[QUOTE] = self.fut_wallet(acc) + amount

    def fut_order_margin(self, acc: Account) -> Decimal:
        return sum((o.reserved for o in self.open_orders_of(FUTURES, acc.name)), ZERO)

    def fut_available(self, acc: Account) -> Decimal:
        used = sum((p.isolated_margin for p in acc.positions.values()), ZERO)
        return self.fut_wallet(acc) - used - self.fut_order_margin(acc)

    def fut_unrealized(self, pos: Position) -> Decimal:
        mark = self.markets[FUTURES][pos.symbol].mark_or_last if pos.symbol in self.markets[FUTURES] else ZERO
        return pos.amt * (mark - pos.entry_price) if pos.amt and mark else ZERO

    def _income(self, acc: Account, symbol: str, kind: str, amount: Decimal, trade_id: str = "") -> None:
        self.income.append(Income(account=acc.name, symbol=symbol, income_type=kind, income=amount,
                                  asset=QUOTE, time=self.now(), tran_id=self.next_id("tran"),
                                  trade_id=trade_id))

    def fut_fill(self, acc: Account, order: Order, price: Decimal, qty: Decimal, maker: bool) -> Trade:
        pos = acc.position(order.symbol)
        pos.leverage = acc.leverage.get(order.symbol, pos.leverage)
        rate = self.fees.futures_maker if maker else self.fees.futures_taker
        fee = q8(price * qty * rate)
        signed = qty if order.side == "BUY" else -qty
        realized = ZERO
        # Order margin reserved for this slice returns to the pool before the position takes its own.
        if order.reserved and order.remaining > 0:
            release = order.reserved * min(qty, order.remaining) / order.remaining
            order.reserved -= release
        opening = signed
        if pos.amt != 0 and (pos.amt > 0) != (signed > 0):
            close = min(qty, abs(pos.amt))
            direction = 1 if pos.amt > 0 else -1
            realized = q8((price - pos.entry_price) * close * direction)
            pos.isolated_margin -= pos.isolated_margin * close / abs(pos.amt)
            pos.amt += close if pos.amt < 0 else -close
            if pos.amt == 0:
                pos.entry_price = ZERO
                pos.isolated_margin = ZERO
            opening = signed + (close if signed < 0 else -close)
        if opening != 0:
            new_amt = pos.amt + opening
            pos.entry_price = (abs(pos.amt) * pos.entry_price + abs(opening) * price) / abs(new_amt)
            pos.amt = new_amt
            pos.isolated_margin += abs(opening) * price / pos.leverage
        pos.update_time = self.now()
        self.fut_add_wallet(acc, realized - fee)
        trade = Trade(market=FUTURES, account=acc.name, symbol=order.symbol, trade_id=self.next_id("trade"),
                      order_id=order.order_id, side=order.side, price=price, qty=qty, quote_qty=price * qty,
                      commission=fee, commission_asset=QUOTE, realized_pnl=realized, maker=maker,
                      time=self.now())
        self.trades.append(trade)
        if realized:
            self._income(acc, order.symbol, "REALIZED_PNL", realized, str(trade.trade_id))
        if fee:
            self._income(acc, order.symbol, "COMMISSION", -fee, str(trade.trade_id))
        return trade

    def fut_account_event(self, acc: Account, reason: str, symbols: list[str]) -> None:
        positions = [acc.position(s) for s in symbols]
        self.emit(Event(kind="account", market=FUTURES, account=acc.name, time=self.now(), reason=reason,
                        balances=[(QUOTE, self.fut_wallet(acc), self.fut_wallet(acc))], positions=positions))

    def settle_funding(self, symbol: str, rate: Decimal) -> None:
        market = self.markets[FUTURES].get(symbol)
        if market is None:
            return
        market.funding_rate = rate
        mark = market.mark_or_last
        for acc in self.accounts.values():
            pos = acc.positions.get(symbol)
            if pos is None or pos.amt == 0 or not mark:
                continue
            fee = q8(-pos.amt * mark * rate)
            self.fut_add_wallet(acc, fee)
            self._income(acc, symbol, "FUNDING_FEE", fee)
            self.funding_log.append({"account": acc.name, "symbol": symbol, "time": self.now(),
                                     "amt": str(pos.amt), "mark": str(mark), "rate": str(rate),
                                     "fee": str(fee)})
            self.fut_account_event(acc, "FUNDING_FEE", [symbol])

    def check_liquidations(self, symbol: str) -> None:
        market = self.markets[FUTURES][symbol]
        mark = market.mark_or_last
        if not mark:
            return
        mmr = self.info.get(FUTURES, symbol).maint_margin_rate
        for acc in list(self.accounts.values()):
            pos = acc.positions.get(symbol)
            if pos is None or pos.amt == 0:
                continue
            liq = liquidation_price(pos, mmr)
            if (pos.amt > 0 and mark <= liq) or (pos.amt < 0 and mark >= liq):
                self._liquidate(acc, pos)
                continue
            maint = abs(pos.amt) * mark * mmr
            equity = pos.isolated_margin + self.fut_unrealized(pos)
            key = (acc.name, symbol)
            if equity > 0 and maint / equity >= Decimal("0.8"):
                if key not in self.margin_called:
                    self.margin_called.add(key)
                    self.emit(Event(kind="margin_call", market=FUTURES, account=acc.name, time=self.now(),
                                    positions=[pos], data={"mark": mark, "maint": maint}))
            else:
                self.margin_called.discard(key)

    def _liquidate(self, acc: Account, pos: Position) -> None:
        for o in list(self.open_orders_of(FUTURES, acc.name)):
            if o.symbol == pos.symbol:
                self.finish_order(o, "CANCELED")
        self._force_close(acc, pos, abs(pos.amt), bankruptcy_price(pos), f"autoclose-{self.now()}", "LIQUIDATION")

    def deleverage(self, account: str, symbol: str, qty: Decimal | None = None,
                   price: Decimal | None = None) -> Order:
        """Auto-deleverage (ADL) ``qty`` (default: all) of the account's position at ``price``.

        Binance closes a profitable counter-position when a liquidation cannot be absorbed, at the
        liquidated order's bankruptcy price; the local venue has no counterparties, so the caller says
        when (``POST /chimera/v1/adl``, ``InProcessExchange.deleverage``) and at what price (default:
        the mark, or the last trade, rounded to the tick). Listed by forceOrders as ``adl_autoclose``.
        """
        acc = self.accounts[account]
        pos = acc.positions.get(symbol)
        if pos is None or pos.amt == 0:
            raise ValueError(f"account {account!r} has no {symbol} position to deleverage")
        qty = min(qty or abs(pos.amt), abs(pos.amt))
        if price is None:
            tick = self.info.get(FUTURES, symbol).tick
            mark = self.markets[FUTURES][symbol].mark_or_last
            price = (mark / tick).to_integral_value() * tick if tick else mark
        return self._force_close(acc, pos, qty, price, "adl_autoclose", "ADL")

    def _force_close(self, acc: Account, pos: Position, qty: Decimal, price: Decimal, client_id: str,
                     kind: str) -> Order:
        """The venue's own closing order (liquidation or ADL): an IOC at ``price``, filled in full.

        No commission: at the bankruptcy price the realized loss equals the isolated margin exactly, and
        the clearance fee Binance takes comes out of that same margin; ADL charges none. The trade is in
        userTrades (realizedPnl, commission 0) and pushed as ORDER_TRADE_UPDATE, so the books see it.
        """
        side = "SELL" if pos.amt > 0 else "BUY"
        order = self.new_order_record(FUTURES, acc.name, pos.symbol, client_id, side, "LIQUIDATION", qty,
                                      price=price, tif="IOC")
        order.reduce_only = True
        saved = self.fees.futures_taker
        self.fees.futures_taker = ZERO
        try:
            trade = self.fut_fill(acc, order, price, qty, maker=False)
        finally:
            self.fees.futures_taker = saved
        self.record_execution(order, trade)
        self.liquidations.append({"account": acc.name, "symbol": pos.symbol, "time": self.now(), "kind": kind,
                                  "qty": str(qty), "price": str(price), "realized_pnl": str(trade.realized_pnl),
                                  "order_id": order.order_id, "trade_id": trade.trade_id})
        return order

    def wallet_history(self, account: str, start_ms: int | None = None, end_ms: int | None = None) -> dict:
        """The account's futures wallet movements by kind over [start, end] (the books' identity).

        Every wallet change is an income row, so ``wallet_change`` = realized_pnl − commission + funding
        + transfers, exactly (8 dp), and ``balance_start`` = the wallet now minus every later movement.
        """
        acc = self.accounts[account]
        rows = [i for i in self.income if i.account == account]
        lo, hi = start_ms if start_ms is not None else -1, end_ms if end_ms is not None else 1 << 62
        sums = {"REALIZED_PNL": ZERO, "COMMISSION": ZERO, "FUNDING_FEE": ZERO, "TRANSFER": ZERO}
        after = ZERO
        for i in rows:
            if i.time > hi:
                after += i.income
            elif i.time >= lo:
                sums[i.income_type] = sums.get(i.income_type, ZERO) + i.income
        end = self.fut_wallet(acc) - after
        change = sum(sums.values(), ZERO)
        return {"account": account, "asset": QUOTE, "balance_start": end - change, "balance_end": end,
                "wallet_change": change, "realized_pnl": sums["REALIZED_PNL"], "commission": -sums["COMMISSION"],
                "funding": sums["FUNDING_FEE"], "transfers": sums["TRANSFER"]}
