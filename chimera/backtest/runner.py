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
from chimera.store.collections import SIGNALS
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
RETENTION_MS = 86_400_000


@dataclass
class EquityPoint:
    t: int
    wallet: Decimal
    unrealized: Decimal
    exposure: Decimal  # Σ |position notional| at the mark


@dataclass
class Curve:
    """The equity sampled once a minute of event time, summed up as it goes (max drawdown, exposure), with
    at most about ``limit`` points kept for the report's curves: each bucket's lowest and highest equity."""

    limit: int
    samples: int = 0
    exposed: int = 0
    peak: Decimal | None = None
    max_dd: Decimal = Decimal(0)
    max_dd_pct: Decimal = Decimal(0)
    max_exposure: Decimal = Decimal(0)
    bucket: int = 1
    _open: list[EquityPoint] = field(default_factory=list)

    def add(self, p: EquityPoint, points: list[EquityPoint]) -> None:
        v = p.wallet + p.unrealized
        self.samples += 1
        self.exposed += p.exposure > 0
        self.max_exposure = max(self.max_exposure, p.exposure)
        self.peak = v if self.peak is None or v > self.peak else self.peak
        if self.peak - v > self.max_dd:
            self.max_dd = self.peak - v
            self.max_dd_pct = self.max_dd / self.peak if self.peak else Decimal(0)
        self._open.append(p)
        if len(self._open) >= self.bucket:
            self._flush(points)
            if len(points) > self.limit:  # twice the bucket, half the points: thinned as it goes
                self.bucket *= 2
                kept = points[:]
                points.clear()
                for i in range(0, len(kept), 4):
                    self._open = kept[i:i + 4]
                    self._flush(points)

    def _flush(self, points: list[EquityPoint]) -> None:
        if not self._open:
            return
        lo = min(self._open, key=lambda q: q.wallet + q.unrealized)
        hi = max(self._open, key=lambda q: q.wallet + q.unrealized)
        points.extend(sorted({id(lo): lo, id(hi): hi}.values(), key=lambda q: q.t))
        self._open = []

    def close(self, points: list[EquityPoint]) -> None:
        last = self._open[-1] if self._open else None
        self._flush(points)
        if last is not None and points[-1] is not last:
            points.append(last)


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
    curve: Curve | None = None  # with ``curve_limit``: the KPIs' figures over every sample, ``equity`` thinned


def _start(rt: InProcessRuntime) -> None:
    """What a starting worker does before it consumes (S6 arms its management tick)."""
    for spec in rt.specs:
        if spec.on_start is not None:
            ctx = rt._context(spec, 0)
            rt._apply(list(spec.on_start(ctx) or ()), parent=None, config_rev=ctx.config.rev)


def forget_old(rt: InProcessRuntime, store, now_ms: int, kept: dict[str, set[str]]) -> None:
    """Once a day of event time: what only a redelivery could need is dropped, so a year's run does not
    keep a year of it in memory. Idempotency markers older than a day (the Redis runtime's expire too,
    ``idem_ttl_s``; nothing is redelivered here later than the same instant) and signals decided more than a
    day ago (S3 reads a signal back only for its redelivery or its ``Decide``; the report never does)."""
    for role, seen in rt._seen.items():
        recent = seen - kept.get(role, set())
        rt._seen[role] = recent
        kept[role] = recent
    for doc in store.query(SIGNALS, {"t0": ("<", now_ms - RETENTION_MS)}):
        store.delete(SIGNALS, doc["_key"])


def run(bundle: dict, feed: Feed, symbols: list[str], *, bundle_id: str, rev: int = 1,
        progress: Callable[[int, int], None] | None = None, sample_every_ms: int = 60_000,
        store_url: str = "sqlite://:memory:", curve_limit: int | None = None) -> RunOutput:
    """``store_url``: the run's own store (a file keeps a long run's documents out of memory);
    ``curve_limit``: keep about that many equity points (``Curve``) instead of one per minute."""
    first = feed.peek()
    if first is None:
        raise ValueError("no market data in the selected period")
    clock = ManualClock(first.time - 1)
    store = open_store(store_url)
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
    out.curve = Curve(curve_limit) if curve_limit else None
    kept: dict[str, set[str]] = {}
    next_forget = first.time + RETENTION_MS
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
            point = _equity(ex, acc, ev.time)
            if out.curve is None:
                out.equity.append(point)
            else:
                out.curve.add(point, out.equity)
            next_sample = (ev.time // sample_every_ms + 1) * sample_every_ms
        if ev.time >= next_forget:
            forget_old(rt, store, ev.time, kept)
            next_forget = ev.time + RETENTION_MS
        if progress is not None and feed.cursor % 5000 == 0:
            progress(feed.cursor, total)
    out.end_ms = clock.now_ms()
    point = _equity(ex, acc, out.end_ms)
    if out.curve is None:
        out.equity.append(point)
    else:
        out.curve.add(point, out.equity)
        out.curve.close(out.equity)
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
