"""One backtest run: the replayed data drives the venue engine and the handlers in event time.

For each replayed market event, in the venue's deterministic order:

1. the runtime first fires every timer due before the event (maker windows, TWAP slices,
   management ticks) and delivers what they publish;
2. the venue engine applies the event (resting orders fill, stops trigger, funding settles);
3. the fills and order updates go to ``venue:{reports}`` as S1 would publish them;
4. the market messages S1 would publish for it (closed 1m klines, mark prices) go on
   ``mkt:events:{perp}:<SYM>``; S2 → S3 → S4 → S6 handle them, and whatever they send to the venue
   executes at this same instant of event time (steps 3–4 repeat until nothing new happens).

Nothing reads the wall clock: the same inputs give the same documents, trades and report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from chimera.backtest.market import messages, wanted_streams
from chimera.handlers.features.role import SPEC as S2
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.handlers.strategy.role import SPEC as S3
from chimera.ops.settings import Settings
from chimera.ports.wiring import memory_ports
from chimera.schemas.messages import FundingEvent
from chimera.store import open_store
from chimera.streams import keys
from chimera.venues.local.engine.futures import QUOTE
from chimera.venues.local.engine.model import FUTURES
from chimera.venues.local.inprocess import InProcessExchange
from chimera.venues.local.replay.feed import Feed
from chimera.workers.clock import ManualClock
from chimera.workers.config import activate
from chimera.workers.inprocess import InProcessRuntime

SPECS = (S2, S3, S4, S6)
ACCOUNT = "main"


@dataclass
class EquityPoint:
    t: int
    wallet: Decimal
    unrealized: Decimal
    exposure: Decimal  # Σ |position notional| at the mark


@dataclass
class RunOutput:
    exchange: InProcessExchange
    runtime: InProcessRuntime
    store: object
    symbols: list[str]
    equity: list[EquityPoint] = field(default_factory=list)
    bars: int = 0
    start_ms: int = 0
    end_ms: int = 0
    last_close_ms: int = 0  # the last replayed bar's close time: where a still open trade is valued


def _start(rt: InProcessRuntime) -> None:
    """What a starting worker does before it consumes (S6 arms its management tick)."""
    for spec in rt.specs:
        if spec.on_start is not None:
            ctx = rt._context(spec, 0)
            rt._apply(list(spec.on_start(ctx) or ()), parent=None, config_rev=ctx.config.rev)


def run(bundle: dict, feed: Feed, symbols: list[str], *, bundle_id: str, rev: int = 1,
        progress: Callable[[int, int], None] | None = None, sample_every_ms: int = 60_000) -> RunOutput:
    first = feed.peek()
    if first is None:
        raise ValueError("no market data in the selected period")
    clock = ManualClock(first.time - 1)
    store = open_store("sqlite://:memory:")
    activate(store, bundle_id, rev, bundle)
    ex = InProcessExchange(clock, feed=feed)
    settings = Settings(symbols=tuple(symbols), store_url="sqlite://:memory:", venue="paper")
    ports = memory_ports(clock, settings, venues=ex.venues())
    rt = InProcessRuntime(SPECS, store=store, settings=settings, clock=clock, ports=ports)
    out = RunOutput(exchange=ex, runtime=rt, store=store, symbols=symbols, start_ms=first.time)
    wanted = wanted_streams(symbols)
    acc = ex.engine.accounts[ACCOUNT]
    _start(rt)

    income_seen = [0]

    def pump() -> None:
        while reports := ex.drain_reports():
            for rep, key, account in reports:
                rt.publish(keys.VENUE_REPORTS, rep, key, account, event_time=rep.ts)
            rt.run()
        if len(ex.engine.income) > income_seen[0]:
            for row in funding_settled(ex, income_seen):
                rt.publish(keys.POS_COMMANDS, row, f"funding:{ACCOUNT}:{row.tran_id}", ACCOUNT,
                           event_time=row.funding_time)
            rt.run()

    total = len(feed)
    next_sample = first.time
    while (ev := feed.peek()) is not None:
        rt.advance_to(ev.time - 1)
        pump()
        feed.pop()
        ex.on_market(ev)
        pump()
        if ev.market == FUTURES and ev.symbol in symbols:
            for stream, msg, key, t in messages(ev, wanted, lambda ev=ev: ex._funding_info(ev.symbol, ev.time)):
                rt.publish(stream, msg, key, ACCOUNT, event_time=t)
                if stream.startswith("mkt:") and type(msg).__name__ == "Kline":
                    out.bars += 1
                    out.last_close_ms = max(out.last_close_ms, msg.close_time)
            rt.run()
            pump()
        rt.log.clear()  # the runtime's XRANGE-like record: nothing reads it here (a stream MAXLEN of 0)
        if ev.time >= next_sample:
            out.equity.append(_equity(ex, acc, ev.time))
            next_sample = (ev.time // sample_every_ms + 1) * sample_every_ms
        if progress is not None and feed.cursor % 5000 == 0:
            progress(feed.cursor, total)
    out.end_ms = clock.now_ms()
    out.equity.append(_equity(ex, acc, out.end_ms))
    if progress is not None:
        progress(total, total)
    return out


def funding_settled(ex: InProcessExchange, seen: list[int]) -> list[FundingEvent]:
    """The account's new FUNDING_FEE income rows as S1 publishes them for S6 (``feeds/user_data``)."""
    rows = ex.engine.income[seen[0]:]
    seen[0] += len(rows)
    rate = {s: m.funding_rate for s, m in ex.engine.markets[FUTURES].items()}
    return [FundingEvent(symbol=i.symbol, funding_time=i.time, rate=rate[i.symbol], settled=True, amount_usdt=i.income,
                         tran_id=str(i.tran_id)) for i in rows if i.account == ACCOUNT and i.income_type == "FUNDING_FEE"]


def _equity(ex: InProcessExchange, acc, t: int) -> EquityPoint:
    eng = ex.engine
    upnl = Decimal(0)
    exposure = Decimal(0)
    for pos in acc.positions.values():
        if pos.amt:
            upnl += eng.fut_unrealized(pos)
            exposure += abs(pos.amt) * eng.markets[FUTURES][pos.symbol].mark_or_last
    return EquityPoint(t=t, wallet=acc.futures_wallet.get(QUOTE, Decimal(0)), unrealized=upnl, exposure=exposure)
