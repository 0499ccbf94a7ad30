"""Parity of the whole chain S2 → S3 → S4 → S6 on the two runtimes (ARCHITECTURE §5, issue 11 item 7).

The same real data (the 1m klines shipped in ``chimera/venues/local/data/``) goes through:

* the Redis runtime: S2, S3, S4, S6 and the scheduler as real workers on real Redis (standalone and
  the cluster), the local venue server replaying the same klines (paused, advanced by the driver),
  S1's user-data connector turning the venue's WebSocket pushes into ``venue:{reports}``;
* the in-process runtime (``chimera/workers/inprocess.py``): the same route tables over an
  in-memory bus, the venue engine called in-process (``chimera/venues/local/inprocess.py``; no HTTP,
  no Redis), its order events turned into the same ``VenueReport`` messages.

One driver moves both: event time goes minute by minute (venue first, then the closed bars and the
mark price as S1 publishes them) and, inside a minute, from one armed timer to the next (maker
windows, TWAP slices), so each handler sees the same market at the same event time on both sides.
The in-process venue pushes its order events onto the bus as it emits them (S1's WebSocket does the
same on Redis), so a fill report is queued ahead of the calling handler's own results.

Compared: decisions (``signals``), intents, order legs, fills, final positions, the ``sig:events``,
``ord:{commands}``, ``ord:{results}`` and ``pos:events`` payloads, and the dead letters. Normalised
(``normalised`` below): wall stamps, the venue's own numbering (order and trade ids; fills are keyed
by client order id and rank), numbers as values, and ``closed_by`` (which of two messages carrying the
same fill reached S6 first: printed, not compared). Each scenario must also have made its things
happen (``summary``), so an empty run cannot pass.

Bundles (``tests/integration/parity_bundles.py``): a maker-then-taker entry with a trailing stop that
moves and a stop that fills, and a TWAP entry.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from decimal import Decimal

import pytest

from chimera.feeds.publish import BatchWriter, kline_key
from chimera.handlers.features.role import SPEC as S2
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.handlers.strategy.role import SPEC as S3
from chimera.schemas.envelope import decode, to_builtins
from chimera.schemas.messages import Kline, MarkPrice
from chimera.store import collections as C
from chimera.store import open_store
from chimera.streams import keys
from chimera.venues.local.loaders import load_freqtrade_klines
from chimera.venues.local.replay import DataSpec
from chimera.venues.local.replay.feed import SAMPLE_DIR
from chimera.workers.clock import ManualClock
from chimera.workers.config import activate
from tests.integration.parity_bundles import BUNDLES, MINUTES, SKIP
from tests.support.local_venue import running_venue
from tests.support.polling import group_caught_up, wait_until
from tests.support.workers import ThreadWorker

SYMS = ("BTCUSDT", "ETHUSDT")
SPECS = (S2, S3, S4, S6)
COMPARED = (C.SIGNALS, C.ORDER_INTENTS, C.ORDERS, C.FILLS, C.POSITIONS)
STREAMS = (keys.SIG_EVENTS, keys.ORD_COMMANDS, keys.ORD_RESULTS, keys.POS_EVENTS)


def data_specs() -> list[DataSpec]:
    return [DataSpec("ft_klines", str(SAMPLE_DIR / f"{s[:-4]}_USDT_USDT-1m-futures.feather"), "futures", s)
            for s in SYMS]


def minutes() -> list[tuple[int, list[tuple[str, object, str, int]]]]:
    """``(close time, [(stream, message, idempotency key, event time)])`` per minute: each symbol's closed
    bar, then its mark price at the close, as S1 publishes them (the reference symbol BTC first)."""
    rows = {s: load_freqtrade_klines(SAMPLE_DIR / f"{s[:-4]}_USDT_USDT-1m-futures.feather")[SKIP:SKIP + MINUTES]
            for s in SYMS}
    out = []
    for i in range(MINUTES):
        batch = []
        for s in SYMS:
            t, o, h, lo, c, v = rows[s][i]
            k = Kline(market="perp", symbol=s, interval="1m", open_time=t, close_time=t + 59_999, open=o, high=h,
                      low=lo, close=c, volume=v)
            stream = keys.mkt_stream("perp", s)
            batch.append((stream, k, kline_key(k), k.close_time))
            batch.append((stream, MarkPrice(symbol=s, mark_price=c, ts=k.close_time), f"mark:{s}:{k.close_time}",
                          k.close_time))
        out.append((rows[SYMS[0]][i][0] + 60_000, batch))
    return out


# --- normalising what the two runs wrote ------------------------------------------------------------

# Stamped from the wall (or by the store) rather than from event time: never compared.
WALL = {"_rev", "_id", "received_at", "recv_ms", "updated_wall", "published_at", "listen_key"}
# Numbers the venue hands out in the order requests reach it. BTC's and ETH's decisions of one minute
# reach S4 in either order on Redis (S3 reads two streams), so the venue numbers them either way.
VENUE_NUMBERS = {"venue_order_id", "order_id", "orderId", "trade_id", "algo_id", "algoId"}
# Which of two messages carrying the same fact reached S6 first (the venue's fill report from S1 or
# S4's result): an arrival order on Redis, not a decision. Printed when it differs, not compared.
# ``version`` counts S6's writes: the fill report and the result booked in one write or in two.
ARRIVAL = {"closed_by", "version"}
# Lists of venue numbers (the trades and funding settlements a position booked): compared by count.
VENUE_NUMBER_LISTS = {"booked_trades", "booked_funding"}
NUMBER = re.compile(r"-?\d+\.\d+")


def normalised(value):
    """Drop wall stamps, venue numbering and arrival-order fields; numbers as values ('108021.00' from
    the venue's REST equals 108021 from the engine)."""
    if isinstance(value, dict):
        return {k: ("<venue>" if k in VENUE_NUMBERS and value[k] not in (None, "")
                    else len(value[k] or ()) if k in VENUE_NUMBER_LISTS else normalised(value[k]))
                for k in sorted(value) if k not in WALL and k not in ARRIVAL}
    if isinstance(value, list | tuple):
        return [normalised(v) for v in value]
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, str) and NUMBER.fullmatch(value):
        return format(Decimal(value).normalize(), "f")
    return value


def documents(store) -> dict[str, dict]:
    out = {name: {d["_key"]: d for d in store.query(name)} for name in COMPARED}
    # A fill's key holds the venue's trade number: key fills by order and rank instead.
    by_order: dict[str, list[dict]] = {}
    for d in out[C.FILLS].values():
        by_order.setdefault(d["client_order_id"], []).append(d)
    out[C.FILLS] = {f"{cid}#{i}": {k: v for k, v in d.items() if k != "_key"} for cid, ds in by_order.items()
                    for i, d in enumerate(sorted(ds, key=lambda d: int(d["trade_id"])))}
    return out


def compare(redis_side: dict, mem_side: dict) -> tuple[list[str], list[str]]:
    """(differences, arrival-order notes), one line each."""
    diffs: list[str] = []
    notes: list[str] = []
    for section in sorted(set(redis_side) | set(mem_side)):
        a, b = redis_side.get(section, {}), mem_side.get(section, {})
        for key in sorted(set(a) | set(b), key=str):
            if key not in a:
                diffs.append(f"{section}/{key}: only in-process")
            elif key not in b:
                diffs.append(f"{section}/{key}: only on Redis")
            else:
                na, nb = normalised(a[key]), normalised(b[key])
                if na != nb:
                    fields = sorted(k for k in set(na) | set(nb) if na.get(k) != nb.get(k)) if isinstance(na, dict) else []
                    diffs.append(f"{section}/{key}: " + ", ".join(f"{f}: redis={na.get(f)!r} inprocess={nb.get(f)!r}"
                                                                  for f in fields))
                elif isinstance(a[key], dict):
                    notes += [f"{section}/{key}: {f} redis={a[key].get(f)!r} inprocess={b[key].get(f)!r}"
                              for f in sorted(ARRIVAL) if a[key].get(f) != b[key].get(f)]
    return diffs, notes


def dead_key(stream: str, env) -> str:
    return f"{stream}:{env.type}:{env.idempotency_key}"


def stream_payloads(entries) -> dict[str, dict]:
    return {f"{env.type}:{env.idempotency_key}": to_builtins(env.payload) for env in entries}


def summary(run: dict) -> dict:
    """What the scenario must have made happen (asserted on both sides, so the parity is not vacuous)."""
    legs = list(run[C.ORDERS].values())
    positions = list(run[C.POSITIONS].values())
    return {
        "maker_legs": sum(1 for d in legs if d.get("leg") == "mk"),
        "taker_legs": sum(1 for d in legs if d.get("leg") == "tk"),
        "twap_legs": sum(1 for d in legs if str(d.get("leg", "")).startswith("tw")),
        "stops": sum(1 for d in legs if d.get("type") == "STOP_MARKET"),
        "stop_moves": sum(1 for p in positions if ((p.get("stop") or {}).get("n") or 0) > 1),
        "stop_fills": sum(1 for p in positions if p.get("close_reason") == "STOP_LOSS"),
        "positions": len(positions),
    }


# --- the two runs -----------------------------------------------------------------------------------

def next_due(r) -> int | None:
    head = r.zrange(keys.SCHED_DUE, 0, 0, withscores=True)
    return int(head[0][1]) if head else None


class RedisChain:
    """S2, S3, S4, S6 as workers on one ManualClock, the scheduler on its own; the venue server; S1 user data.

    Moving to ``t``: the workers' clock first, then the venue, then the scheduler's clock. A fill the
    venue's move causes is an event of minute ``t`` and S6 may book it while the venue is still moving
    (S1 pushes it at once), so the workers must already read ``t`` (the in-process runtime handles it
    after both moved); a timer due at ``t`` must act on the venue as it is at ``t``, so it fires last."""

    def __init__(self, r, settings, store, venue, clock, sched_clock) -> None:
        self.r, self.settings, self.store, self.venue, self.clock = r, settings, store, venue, clock
        self.sched_clock = sched_clock
        self.reports_sent = 0
        self.workers: list = []
        hub = venue.server.hub
        publish_user = hub.publish_user

        def counting(listen_key, payload):  # how many reports S1 must publish: the venue's pushes
            from chimera.venues.binance import user_data as ud

            if ud.normalize_user_event(payload) is not None:
                self.reports_sent += 1
            return publish_user(listen_key, payload)

        hub.publish_user = counting

    def fingerprint(self) -> tuple | None:
        """None unless quiet: nothing due, every report S1 owes published, every group caught up, and the
        due-queue the same after the groups were read as before (the scheduler moves an entry from the
        queue to a stream between two reads: both ends are checked around the streams). Quiet, it is
        what would change if something were still moving (queue, stream lengths, entries handled)."""
        queue = self.r.zrange(keys.SCHED_DUE, 0, -1, withscores=True)
        if (queue and queue[0][1] <= self.clock.now_ms()) or self.r.xlen(keys.VENUE_REPORTS) < self.reports_sent:
            return None
        lengths = []
        for spec in SPECS:
            for stream in spec.streams(self.settings):
                if self.r.exists(stream):
                    if not group_caught_up(self.r, stream, keys.group(spec.role)):
                        return None
                    lengths.append(self.r.xlen(stream))
        if self.r.zrange(keys.SCHED_DUE, 0, -1, withscores=True) != queue:
            return None
        return tuple(queue), tuple(lengths), tuple(w.processed for w in self.workers), self.reports_sent

    def settle(self) -> None:
        """Quiet twice in a row with nothing changed in between. Once is not enough on the cluster: a
        worker's batch commit goes to each node separately, so its ack (one node) can land before the
        timer or message it writes to another node."""
        last: list = [None]

        def stable() -> bool:
            fp = self.fingerprint()
            same, last[0] = fp is not None and fp == last[0], fp
            return same

        wait_until(stable, timeout=60, interval=0.05, message=f"the chain quiet at {self.clock.now_ms()}")

    def to(self, t: int) -> None:
        """Move venue and clock to ``t`` through every timer due before it, settling after each."""
        while (due := next_due(self.r)) is not None and due <= t:
            self._at(due)
        self._at(t)

    def _at(self, t: int) -> None:
        self.clock.set(t)
        self.venue.advance(to_ms=t)
        self.sched_clock.set(t)
        self.settle()

    def publish(self, batch) -> None:
        """As S1 does: a closed perp bar also goes into the bar store (S2's rho reference)."""
        writer = BatchWriter(self.r, self.clock)
        for stream, msg, key, event_time in batch:
            if isinstance(msg, Kline):
                writer.add_closed_bar(msg)
            else:
                writer.add(stream, msg, key, event_time=event_time)
        writer.flush()
        self.settle()


def run_on_redis(r, settings, tmp_path, bundle: dict) -> dict:
    from chimera.workers.scheduler_role import run_scheduler
    from tests.support.positions import user_data

    mins = minutes()
    clock = ManualClock(mins[0][0] - 60_000)
    sched_clock = ManualClock(clock.now_ms())
    with running_venue(tmp_path, data=data_specs(), speed=0.0, orders_per_10s=10_000,
                       orders_per_minute=100_000) as venue:
        s = dataclasses.replace(settings, symbols=SYMS, venue_url=venue.base_url)
        store = open_store(s.store_url)
        activate(store, bundle["bundle_id"], 1, bundle)
        venue.advance(to_ms=clock.now_ms())
        stop = threading.Event()
        sched = threading.Thread(target=run_scheduler, args=(r, sched_clock, "sched", stop), daemon=True)
        sched.start()
        chain = RedisChain(r, s, store, venue, clock, sched_clock)
        try:
            with user_data(r, venue, s.store_url), ThreadWorker(S2, r, s, "s2", clock=clock) as w2, \
                    ThreadWorker(S3, r, s, "s3", clock=clock) as w3, ThreadWorker(S4, r, s, "s4", clock=clock) as w4, \
                    ThreadWorker(S6, r, s, "s6", clock=clock) as w6:
                chain.workers = [w2, w3, w4, w6]
                for t, batch in mins:
                    chain.to(t)
                    chain.publish(batch)
                chain.to(mins[-1][0] + 60_000)
        finally:
            stop.set()
            sched.join(5)
        out = documents(store)
        for stream in STREAMS:
            out[stream] = stream_payloads(decode(f, i.decode(), stream) for i, f in r.xrange(stream))
        letters = (decode(f).payload for _, f in r.xrange(keys.DEAD_LETTER))
        out["dead_letters"] = {dead_key(d.stream, decode(d.fields)): d.reason.splitlines()[0] for d in letters}
        return out


def run_in_process(settings, tmp_path, bundle: dict) -> dict:
    from chimera.ports.venues import Venues
    from chimera.ports.wiring import memory_ports
    from chimera.venues.local.inprocess import InProcessExchange
    from chimera.workers.inprocess import InProcessRuntime

    mins = minutes()
    clock = ManualClock(mins[0][0] - 60_000)
    store = open_store(f"sqlite:///{tmp_path}/inprocess.sqlite")
    activate(store, bundle["bundle_id"], 1, bundle)
    exchange = InProcessExchange(clock, data=data_specs())
    s = dataclasses.replace(settings, symbols=SYMS)
    ports = memory_ports(clock, s, venues=Venues(s, clients={"main": exchange.venue("main")}))
    rt = InProcessRuntime(SPECS, store=store, settings=s, clock=clock, ports=ports)

    def push_reports() -> None:
        for report, key, account in exchange.drain_reports():
            rt.publish(keys.VENUE_REPORTS, report, key, account_id=account, event_time=clock.now_ms())

    call = exchange.call

    def pushing_call(*args, **params):
        """The venue pushes its order events as it emits them, like the WebSocket S1 listens to: on the
        bus before the calling handler's own emits (which the runtime appends when it returns)."""
        try:
            return call(*args, **params)
        finally:
            push_reports()

    exchange.call = pushing_call

    def pump() -> None:
        push_reports()  # what the market moves made happen (stops triggered by a replayed trade)
        rt.run(until_ms=clock.now_ms())

    def at(t: int) -> None:
        exchange.advance_to(t)
        pump()

    def to(t: int) -> None:
        while (nxt := rt.next_timer()) is not None and nxt[0] <= t:
            at(nxt[0])
        at(t)

    exchange.advance_to(clock.now_ms())
    for t, batch in mins:
        to(t)
        for stream, msg, key, event_time in batch:
            rt.publish(stream, msg, key, event_time=event_time)
        pump()
    to(mins[-1][0] + 60_000)
    out = documents(store)
    for stream in STREAMS:
        out[stream] = stream_payloads(rt.entries(stream))
    out["dead_letters"] = {dead_key(stream, env): reason.splitlines()[0] for stream, env, reason in rt.dead}
    return out


@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", sorted(BUNDLES))
def test_redis_and_in_process_runtimes_agree_on_the_whole_chain(r, settings, tmp_path, scenario):
    bundle, expect = BUNDLES[scenario]
    mem = run_in_process(settings, tmp_path, bundle)
    red = run_on_redis(r, settings, tmp_path, bundle)
    happened = summary(red)
    print(scenario, "redis:", happened, "in-process:", summary(mem))
    for name, run in (("redis", red), ("inprocess", mem)):  # kept for reading a failure
        (tmp_path / f"parity_{scenario}_{name}.json").write_text(json.dumps(run, default=str, indent=1, sort_keys=True))
    diffs, notes = compare(red, mem)
    print("arrival order (not compared):", *notes, sep="\n  ")
    assert not diffs, f"{len(diffs)} difference(s):\n" + "\n".join(diffs[:60])
    # A clean run dead-letters nothing (the same letters on both sides by now).
    assert not red["dead_letters"], red["dead_letters"]
    for what, least in expect.items():
        assert happened[what] >= least, (what, happened)
