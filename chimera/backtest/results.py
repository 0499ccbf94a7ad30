"""From a finished run to what a trader reads: round-trip trades, KPIs and the books' identity.

Trades are rebuilt from the venue's own fills (the source of truth), one per round trip of a
symbol's position (flat → open → flat); a position still open at the end is valued at the last
mark and listed as ``OPEN`` (backtesting.py's ``finalize_trades``). The identity checked is the one
of issue 12: venue wallet change = Σ realized PnL − Σ fees + Σ funding, to 1e-8 USDT, over the
venue (always) and over the store's positions and fills (when S4/S6 booked them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from chimera.backtest.identity import EPS, ZERO, money_row, one_to_one_row, positions_net
from chimera.backtest.runner import ACCOUNT, RunOutput
from chimera.store.collections import FILLS, ORDERS, POSITIONS
from chimera.venues.local.engine.model import FUTURES


@dataclass
class Trade:
    n: int
    symbol: str
    side: str  # LONG | SHORT
    entry_time: int
    entry_price: Decimal
    qty: Decimal
    exit_time: int = 0
    exit_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    status: str = "OPEN"  # CLOSED | OPEN
    exit_reason: str = ""
    pos_id: str = ""
    fills: int = 0
    _entry_notional: Decimal = ZERO
    _exit_qty: Decimal = ZERO
    _exit_notional: Decimal = ZERO

    @property
    def net_pnl(self) -> Decimal:
        return self.realized_pnl - self.fees + self.funding

    def doc(self, run_id: str) -> dict:
        return {"run_id": run_id, "n": self.n, "symbol": self.symbol, "side": self.side, "status": self.status,
                "entry_time": self.entry_time, "entry_price": str(self.entry_price), "qty": str(self.qty),
                "exit_time": self.exit_time, "exit_price": str(self.exit_price), "exit_reason": self.exit_reason,
                "realized_pnl": str(self.realized_pnl), "fees": str(self.fees), "funding": str(self.funding),
                "net_pnl": str(self.net_pnl), "fills": self.fills, "pos_id": self.pos_id}


@dataclass
class Summary:
    trades: list[Trade]
    kpis: dict
    checks: list[dict] = field(default_factory=list)


def _reason(order) -> str:
    if order.client_id.startswith("autoclose-"):
        return "LIQUIDATION"
    if order.client_id == "adl_autoclose":
        return "ADL"
    return {"STOP_MARKET": "STOP", "TAKE_PROFIT_MARKET": "TAKE_PROFIT"}.get(order.orig_type, "EXIT")


def round_trips(out: RunOutput) -> list[Trade]:
    eng = out.exchange.engine
    pos_of = {}
    for d in out.store.query(ORDERS, {}):
        if d.get("venue_order_id") and d.get("pos_id"):
            pos_of[str(d["venue_order_id"])] = d["pos_id"]
    funding = [i for i in eng.income if i.account == ACCOUNT and i.income_type == "FUNDING_FEE"]
    trades: list[Trade] = []
    open_: dict[str, Trade] = {}
    amt: dict[str, Decimal] = {}
    for t in (t for t in eng.trades if t.account == ACCOUNT and t.market == FUTURES):
        signed = t.qty if t.side == "BUY" else -t.qty
        cur = amt.get(t.symbol, ZERO)
        order = eng.orders[t.order_id]
        left = t.qty
        if cur and (cur > 0) != (signed > 0):  # reduces (maybe through zero)
            tr = open_[t.symbol]
            close = min(t.qty, abs(cur))
            share = close / t.qty
            tr._exit_qty += close
            tr._exit_notional += close * t.price
            tr.realized_pnl += t.realized_pnl
            tr.fees += t.commission * share
            tr.fills += 1
            tr.exit_time, tr.exit_reason = t.time, _reason(order)
            tr.pos_id = tr.pos_id or pos_of.get(str(t.order_id), "")
            cur += close if cur < 0 else -close
            left -= close
            if cur == 0:
                tr.exit_price = tr._exit_notional / tr._exit_qty
                tr.status = "CLOSED"
                del open_[t.symbol]
        if left:
            tr = open_.get(t.symbol)
            if tr is None:
                tr = open_[t.symbol] = Trade(n=len(trades) + 1, symbol=t.symbol, side="LONG" if signed > 0 else "SHORT",
                                              entry_time=t.time, entry_price=ZERO, qty=ZERO,
                                              pos_id=pos_of.get(str(t.order_id), ""))
                trades.append(tr)
            tr.qty += left
            tr._entry_notional += left * t.price
            tr.entry_price = tr._entry_notional / tr.qty
            tr.fees += t.commission * left / t.qty
            tr.fills += 1
            cur += left if signed > 0 else -left
        amt[t.symbol] = cur
    for tr in trades:
        end = tr.exit_time if tr.status == "CLOSED" else out.end_ms
        tr.funding = sum((i.income for i in funding if i.symbol == tr.symbol and tr.entry_time <= i.time <= end), ZERO)
        if tr.status == "OPEN":
            mark = eng.markets[FUTURES][tr.symbol].mark_or_last
            held = tr.qty - tr._exit_qty
            sign = 1 if tr.side == "LONG" else -1
            tr.exit_time, tr.exit_price, tr.exit_reason = out.last_close_ms or out.end_ms, mark, "END_OF_DATA"
            tr.realized_pnl += (mark - tr.entry_price) * held * sign  # valued, not realized at the venue
    return trades


def _max_drawdown(curve: list[Decimal]) -> tuple[Decimal, Decimal]:
    peak, worst, worst_pct = None, ZERO, ZERO
    for v in curve:
        peak = v if peak is None or v > peak else peak
        dd = peak - v
        if dd > worst:
            worst = dd
            worst_pct = dd / peak if peak else ZERO
    return worst, worst_pct


def summarize(out: RunOutput) -> Summary:
    ex = out.exchange
    trades = round_trips(out)
    wallet = ex.wallet_history(ACCOUNT)
    curve = [p.wallet + p.unrealized for p in out.equity]
    start = wallet["balance_start"]
    end_equity = curve[-1] if curve else wallet["balance_end"]
    dd, dd_pct = _max_drawdown(curve) if out.curve is None else (out.curve.max_dd, out.curve.max_dd_pct)
    samples = len(out.equity) if out.curve is None else out.curve.samples
    closed = [t for t in trades if t.status == "CLOSED"]
    wins = [t for t in closed if t.net_pnl > 0]
    gross_win = sum((t.net_pnl for t in wins), ZERO)
    gross_loss = -sum((t.net_pnl for t in closed if t.net_pnl <= 0), ZERO)
    exposed = sum(1 for p in out.equity if p.exposure > 0) if out.curve is None else out.curve.exposed
    top_exposure = max((p.exposure for p in out.equity), default=ZERO) if out.curve is None else out.curve.max_exposure
    q2 = Decimal("0.01")
    kpis = {
        "start_wallet_usdt": str(start), "end_wallet_usdt": str(wallet["balance_end"]),
        "end_equity_usdt": str(end_equity), "net_pnl_usdt": str(end_equity - start),
        "return_pct": str(((end_equity - start) / start * 100).quantize(Decimal("0.0001"))) if start else "0",
        "max_drawdown_usdt": str(dd.quantize(EPS)), "max_drawdown_pct": str((dd_pct * 100).quantize(Decimal("0.0001"))),
        "trades": len(trades), "closed_trades": len(closed), "open_trades": len(trades) - len(closed),
        "win_rate_pct": str((Decimal(len(wins)) / len(closed) * 100).quantize(q2)) if closed else "0",
        "profit_factor": str((gross_win / gross_loss).quantize(Decimal("0.001"))) if gross_loss else "",
        "realized_pnl_usdt": str(wallet["realized_pnl"]), "fees_usdt": str(wallet["commission"]),
        "funding_usdt": str(wallet["funding"]), "venue_fills": sum(1 for t in ex.engine.trades if t.account == ACCOUNT),
        "exposure_time_pct": str((Decimal(exposed) / samples * 100).quantize(q2)) if samples else "0",
        "max_exposure_usdt": str(top_exposure.quantize(q2)),
        "bars": out.bars, "start_ms": out.start_ms, "end_ms": out.end_ms,
        "liquidations": sum(1 for x in ex.engine.liquidations if x["account"] == ACCOUNT),
        "dead_letters": len(out.runtime.dead),
    }
    return Summary(trades=trades, kpis=kpis, checks=checks(out, wallet))


def checks(out: RunOutput, wallet: dict) -> list[dict]:
    """The books' identity, venue side and store side, each with its figures."""
    eng = out.exchange.engine
    mine = [t for t in eng.trades if t.account == ACCOUNT]
    funding = sum((i.income for i in eng.income if i.account == ACCOUNT and i.income_type == "FUNDING_FEE"), ZERO)
    venue_sum = sum((t.realized_pnl - t.commission for t in mine), ZERO) + funding
    change = wallet["wallet_change"] - wallet["transfers"]
    res = [money_row("venue_identity", "venue wallet change = Σ realized − Σ fees + Σ funding (venue trades and income)",
                     change, venue_sum)]
    fills = out.store.query(FILLS, {})
    if fills or mine:
        res.append(one_to_one_row("fills_one_to_one", "store fills = venue trades, one to one (by trade id)",
                                  (f"FUT:{t.symbol}:{t.trade_id}" for t in mine), (d["_key"] for d in fills)))
    positions = out.store.query(POSITIONS, {})
    if positions and all("realized_pnl" in p for p in positions):
        res.append(money_row("store_identity", "venue wallet change = Σ over the store's positions (realized − fees + funding)",
                             change, positions_net(positions)))
    return res
