"""A full-chain replay backtest on Redis (issue 12 item 3; trading-ci's REPLAY path).

``chimera backtest --via redis`` runs the same bundle over the same data as the in-process backtest,
but through production's moving parts: S2, S3, S4 and S6 as real consumer-group workers (the Redis
runtime, ``chimera/workers/runtime.py``) with the scheduler, on a real Redis (single node or the
cluster), against the local venue server (HTTP through the official Binance SDK), whose order updates
come back through S1's user-data connector (WebSocket → ``venue:{reports}``).

Event time: every worker's clock is one ``ManualClock`` the driver moves; the venue server is paused
and advanced by the driver. For each replayed market event, in the venue's order, as the in-process
runner (``runner.py``) does:

1. every timer due before the event fires: venue and clock move to its due time, the scheduler
   publishes it, the pipeline drains;
2. the venue replays the event (resting orders fill, stops trigger, funding settles); S1 publishes
   its order updates;
3. the market messages S1 publishes for it (``market.messages``: closed 1m bars, mark prices) go on
   ``mkt:events:{perp}:<SYM>``; the driver waits until the streams are drained (every role's group
   caught up, every venue push published, nothing due), twice in a row.

So a decision taken on the bar closing at 12:00:59.999 reaches the venue at 12:00:59.999, as live and
as in-process. At the end the same ``backtest_runs`` / ``backtest_trades`` and report are written
(``runtime: "redis"``); ``tests/integration/test_replay_backtest.py`` checks that both runs trade alike.

The driver plays S1's market-data role (publishing exactly what S1 publishes for each replayed event)
instead of S1 reading the venue's market WebSocket: a socket gives no moment at which "S1 has
published everything of this event" is known. Nothing else is stood in for.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chimera.backtest.bundle import load_bundle
from chimera.backtest.data import DataError, load
from chimera.backtest.service import Result, result, run_id_for
from chimera.errors import FatalError
from chimera.streams import keys

POLL_S = 0.01


class _ServerBooks:
    """What the results need of an exchange, read from the venue server's engine."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def wallet_history(self, account: str = "main", start_ms: int | None = None, end_ms: int | None = None) -> dict:
        return self.engine.wallet_history(account, start_ms, end_ms)


class _Chain:
    """The workers' drain state: quiet = nothing due, every venue push published, every group caught up."""

    def __init__(self, r, settings, specs, clock, venue, timeout_s: float) -> None:
        self.r, self.settings, self.specs, self.clock, self.venue = r, settings, specs, clock, venue
        self.timeout_s = timeout_s
        self.reports_sent = 0
        self.funding_published = 0  # settled FundingEvents S1 put on pos:{commands} so far
        self.funding_cursor = ""
        self.workers: list = []
        self.streams = sorted({(s, keys.group(spec.role)) for spec in specs for s in spec.streams(settings)})
        hub = venue.server.hub
        publish_user = hub.publish_user

        def counting(listen_key, payload):  # how many reports S1 owes: the venue's pushes that become one
            from chimera.venues.binance import user_data as ud

            if ud.normalize_user_event(payload) is not None:
                self.reports_sent += 1
            return publish_user(listen_key, payload)

        hub.publish_user = counting

    def _caught_up(self, stream: str, group: str) -> bool:
        for g in self.r.xinfo_groups(stream):
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == group:
                return not int(g.get("pending") or 0) and not int(g.get("lag") or 0)
        return False

    def _funding_owed(self) -> bool:
        """S1 answers the venue's FUNDING_FEE push by reading the income rows and publishing one settled
        FundingEvent per row on pos:{commands}: owed while fewer are there than the venue booked."""
        from chimera.schemas.envelope import decode
        from chimera.schemas.messages import FundingEvent

        engine = self.venue.server.engine
        booked = self.venue.call(lambda: sum(1 for i in engine.income
                                             if i.account == "main" and i.income_type == "FUNDING_FEE"))
        if booked <= self.funding_published:
            return False
        start = f"({self.funding_cursor}" if self.funding_cursor else "-"
        for eid, fields in self.r.xrange(keys.POS_COMMANDS, start, "+"):
            self.funding_cursor = eid.decode() if isinstance(eid, bytes) else eid
            try:
                if isinstance(decode(fields).payload, FundingEvent):
                    self.funding_published += 1
            except Exception:  # noqa: BLE001 - not a message of ours: S6 dead-letters it
                continue
        return booked > self.funding_published

    def fingerprint(self) -> tuple | None:
        queue = self.r.zrange(keys.SCHED_DUE, 0, -1, withscores=True)
        if (queue and queue[0][1] <= self.clock.now_ms()) or self.r.xlen(keys.VENUE_REPORTS) < self.reports_sent:
            return None
        if self._funding_owed():
            return None
        lengths = []
        for stream, group in self.streams:
            if self.r.exists(stream):
                if not self._caught_up(stream, group):
                    return None
                lengths.append(self.r.xlen(stream))
        if self.r.zrange(keys.SCHED_DUE, 0, -1, withscores=True) != queue:
            return None
        return tuple(queue), tuple(lengths), tuple(w.processed for w in self.workers), self.reports_sent

    def settle(self) -> None:
        """Quiet twice in a row with nothing changed between: on the cluster a batch's ack (one node)
        can land before the message or timer it writes to another node."""
        deadline = time.monotonic() + self.timeout_s
        last = None
        while True:
            fp = self.fingerprint()
            if fp is not None and fp == last:
                return
            last = fp
            if time.monotonic() > deadline:
                raise FatalError(f"the pipeline did not drain within {self.timeout_s:.0f}s at event time "
                                 f"{self.clock.now_ms()} (a worker stuck or dead? see its log)")
            time.sleep(POLL_S)

    def next_due(self) -> int | None:
        head = self.r.zrange(keys.SCHED_DUE, 0, 0, withscores=True)
        return int(head[0][1]) if head else None

    def at(self, t: int) -> None:
        self.venue.advance(to_ms=t)
        self.clock.set(t)
        self.settle()

    def timers_until(self, t: int) -> None:
        """Fire every timer due at or before ``t``, each at its due time, draining after each."""
        while (due := self.next_due()) is not None and due <= t:
            self.at(max(due, self.clock.now_ms()))


def check_redis_empty(r) -> None:
    """A replay needs the pipeline's streams to itself: refuse a Redis already carrying them."""
    used = [k for k in (keys.SCHED_DUE, keys.VENUE_REPORTS, keys.ORD_COMMANDS, keys.SIG_EVENTS, keys.POS_EVENTS)
            if r.exists(k)]
    if used:
        raise FatalError(f"Redis already holds the pipeline's keys ({', '.join(used)}): a replay backtest "
                         "needs a Redis of its own; point CHIMERA_REDIS_URL at an empty one (e.g. redis-server "
                         "--port 6391 and redis://127.0.0.1:6391/0)")


def replay_backtest(bundle_path: str, data: list[str], from_text: str | None, to_text: str | None, *, settings,
                    progress: Callable[[int, int], None] | None = None, settle_timeout_s: float = 60.0,
                    work_dir: str | None = None) -> Result:
    """Run the bundle over the data through Redis workers; the result as ``service.backtest`` builds it."""
    from chimera.ops.bootstrap import redis_from

    bundle = load_bundle(bundle_path)
    ds = load(data, from_text, to_text)
    r = redis_from(settings)
    check_redis_empty(r)
    run_id = run_id_for("rr-", bundle, ds)  # the in-process run's id, marked as the Redis replay
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        out = _run(r, settings, bundle, ds, Path(tmp), progress, settle_timeout_s)
    from chimera.backtest.results import summarize

    return result(run_id, "redis", bundle, ds, data, from_text, to_text, summarize(out), out.equity)


def _run(r, settings, bundle, ds, tmp: Path, progress, settle_timeout_s: float):
    from types import SimpleNamespace

    from chimera.backtest.market import messages, wanted_streams
    from chimera.backtest.runner import ACCOUNT, SPECS, RunOutput, _equity
    from chimera.feeds.publish import BatchWriter
    from chimera.feeds.user_data import UserDataConnector
    from chimera.schemas.envelope import decode
    from chimera.schemas.messages import Kline
    from chimera.store import open_store
    from chimera.venues.binance.market_data import futures_rest
    from chimera.venues.local.engine import FillModel
    from chimera.venues.local.engine.model import FUTURES
    from chimera.venues.local.server.app import VenueConfig
    from chimera.venues.local.testing import start_venue
    from chimera.workers.clock import EventClock
    from chimera.workers.config import activate
    from chimera.workers.runtime import Worker
    from chimera.workers.scheduler_role import run_scheduler

    first = ds.feed.peek()
    if first is None:
        raise DataError("no market data in the selected period")
    fm = FillModel()
    # The venue replays exactly the events the in-process run replays (same specs, same period).
    hi = ds.feed.events[-1].time
    venue = start_venue(VenueConfig(data=list(ds.specs), start_ms=first.time, end_ms=hi, speed=0.0,
                                    symbols=None, half_spread_bps=fm.half_spread_bps,
                                    impact_bps_per_million=fm.impact_bps_per_million, fill_mode=fm.fill_mode,
                                    weight_per_minute=10**9, orders_per_10s=10**9, orders_per_minute=10**9,
                                    state_file=str(tmp / "venue-state.json")))
    clock = EventClock(first.time - 1)
    s = dataclasses.replace(settings, symbols=tuple(ds.symbols), venue="paper", venue_url=venue.base_url,
                            store_url=f"sqlite:///{tmp}/replay.sqlite", metrics_port=None)
    store = open_store(s.store_url)
    activate(store, bundle.bundle_id, bundle.rev, bundle.body)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    workers: list[Worker] = []
    ud = None
    try:
        venue.advance(to_ms=clock.now_ms())
        # The venue stamps by the replay's event clock too (in-process, the engine runs on the
        # runtime's clock): an order sent by a handler acting at t is at the venue at t.
        server = venue.server
        venue.call(setattr, server.engine, "now", lambda: max(server.clock.time_ms, clock.now_ms()))
        chain = _Chain(r, s, SPECS, clock, venue, settle_timeout_s)
        key, secret = venue.keys[ACCOUNT]
        ud = UserDataConnector(r=r, clock=clock, store=open_store(s.store_url), ws_url=venue.ws_url,
                               rest=futures_rest(venue.base_url, key, secret), account_id=ACCOUNT)
        ud.start()
        deadline = time.monotonic() + 20
        while not any(ud.listen_key in c.subs for c in venue.server.hub.conns):
            if time.monotonic() > deadline:
                raise FatalError("S1's user-data connector did not subscribe to the venue within 20s")
            time.sleep(0.05)
        threads.append(threading.Thread(target=run_scheduler, args=(r, clock, "replay-sched", stop), daemon=True))
        for spec in SPECS:
            w = Worker(spec, r, settings=s, store=open_store(s.store_url), clock=clock, consumer=f"replay-{spec.role}")
            workers.append(w)
            threads.append(threading.Thread(target=w.run, daemon=True))
        for t in threads:
            t.start()
        chain.workers = workers
        chain.settle()  # on_start timers armed (S6's management tick)
        out = RunOutput(exchange=_ServerBooks(venue.server.engine), runtime=SimpleNamespace(dead=[]), store=store,
                        symbols=list(ds.symbols), start_ms=first.time)
        wanted = wanted_streams(list(ds.symbols))
        total, next_sample = len(ds.feed), first.time
        for done, ev in enumerate(ds.feed.events, 1):
            chain.timers_until(ev.time - 1)
            venue.advance(events=1)
            clock.set(ev.time)
            chain.settle()
            if ev.market == FUTURES and ev.symbol in ds.symbols:
                writer = BatchWriter(r, clock)
                funding = lambda ev=ev: venue.call(venue.server._funding_info, ev.symbol, ev.time)  # noqa: E731
                for stream, msg, mkey, t in messages(ev, wanted, funding):
                    if isinstance(msg, Kline):
                        writer.add_closed_bar(msg)  # as S1: the bar store (S2's reference) and the stream
                        out.bars += 1
                        # where a trade still open at the end is valued (the runner's RunOutput field)
                        out.last_close_ms = max(getattr(out, "last_close_ms", 0), msg.close_time)
                    else:
                        writer.add(stream, msg, mkey, event_time=t)
                writer.flush()
                chain.settle()
            if ev.time >= next_sample:
                out.equity.append(venue.call(_equity, out.exchange, venue.server.engine.accounts[ACCOUNT], ev.time))
                next_sample = (ev.time // 60_000 + 1) * 60_000
            if progress is not None and done % 500 == 0:
                progress(done, total)
        out.end_ms = clock.now_ms()
        out.equity.append(venue.call(_equity, out.exchange, venue.server.engine.accounts[ACCOUNT], out.end_ms))
        if progress is not None:
            progress(total, total)
        out.runtime.dead = [decode(f).payload for _, f in r.xrange(keys.DEAD_LETTER)]
        return out
    finally:
        stop.set()
        for w in workers:
            w.stop()
        for t in threads:
            t.join(10)
        if ud is not None:
            ud.stop()
        venue.stop()
