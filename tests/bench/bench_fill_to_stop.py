"""Issue #6 latency: the exchange-side stop is at the venue within 100 ms of the entry fill.

    python tests/bench/bench_fill_to_stop.py [--n 50]

Starts its own redis-server, a 6-node Redis Cluster (tests.support.redis_servers) and the local venue
(the real 2023-04-04 BTCUSDT recording, paused, no state file). S4 (router) and S6 (positions) run as
real worker processes (``tests.support.run_worker``), the scheduler as a thread here (it fires the router's
fill-booking step, which competes with the stop for S4 as it does in production).

Measured, one entry in flight, ``--n`` times per backend: a MARKET ENTRY for 0.001 BTCUSDT (BUY and
SELL in turn) with ``sl_price`` 2 % away on the protective side. The path is the entry's FILLED
OrderResult on ``ord:{results}`` -> S6 -> ``SubmitOrder <iid>:sl1`` -> S4 -> STOP_MARKET at the venue ->
the stop's OrderResult ACCEPTED (Chimera's name for the venue's NEW: the venue has acked it). Two figures:

* server: the millisecond parts of the two entries' stream ids (same stream, same node, one clock);
* client: ``time.perf_counter()`` when this process's reader saw each entry.

Percentiles are nearest-rank over the samples (with 50, p99 is the max). Outside the timed path, each
stop is read back from the venue (NEW, the closing side, the trigger asked for).

Each position is then closed (reduce-only MARKET EXIT; S6 cancels its stop) before the next entry, so
S6 holds one position at a time and the venue ends flat with no open stop (checked).

Baseline, measured in the same run on the same Redis and venue: the floor of that path without
Chimera: two raw hops (XADD, a thread's blocking XREADGROUP, XADD on, a second thread's XREADGROUP),
then the stop placed directly through the adapter (``FuturesTrading.new_stop``), then XADD of a
"done" entry; the same two figures (ids of the first and the done entry, same hash slot).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loguru import logger  # noqa: E402

from chimera.ops.settings import Settings  # noqa: E402
from chimera.schemas.envelope import decode  # noqa: E402
from chimera.schemas.messages import OrderIntent, SubmitOrder  # noqa: E402
from chimera.streams import keys  # noqa: E402
from chimera.streams.producer import Producer  # noqa: E402
from chimera.streams.redis import connect  # noqa: E402
from chimera.venues.binance.adapter import client_order_id  # noqa: E402
from chimera.venues.local.replay import DataSpec  # noqa: E402
from chimera.venues.local.server.app import VenueConfig  # noqa: E402
from chimera.venues.local.testing import start_venue  # noqa: E402
from chimera.workers.clock import WallClock  # noqa: E402
from chimera.workers.scheduler_role import run_scheduler  # noqa: E402
from tests.bench.bench_pipeline import pct  # noqa: E402
from tests.support.futures_venue import WS_2023, fut  # noqa: E402
from tests.support.redis_servers import RedisCluster, RedisServer  # noqa: E402
from tests.support.workers import spawn  # noqa: E402

SYM, QTY, WARM, BUDGET_MS = "BTCUSDT", Decimal("0.001"), 3, 100
TICK = Decimal("0.1")


def ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


def protective(mid: Decimal, side: str) -> Decimal:
    return (mid * (Decimal("0.98") if side == "BUY" else Decimal("1.02"))).quantize(TICK)


class Results:
    """Follows ord:{results}: (stream-id ms, perf_counter when seen) of each (client order id, status)."""

    def __init__(self, r) -> None:
        self.r, self.last, self.seen = r, "0-0", {}

    def wait(self, cid: str, status: str, timeout_s: float = 60) -> tuple[int, float]:
        end = time.monotonic() + timeout_s
        while (cid, status) not in self.seen:
            if time.monotonic() > end:
                raise SystemExit(f"timed out waiting for {status} of {cid}")
            resp = self.r.xread({keys.ORD_RESULTS: self.last}, block=200, count=100)
            now = time.perf_counter()
            for _stream, entries in resp or []:
                for entry_id, fields in entries:
                    self.last = entry_id
                    res = decode(fields).payload
                    self.seen.setdefault((res.client_order_id, res.status), (ms(entry_id), now))
        return self.seen[(cid, status)]


def chimera(url: str, cluster: bool, venue, tmp: Path, n: int) -> tuple[list[float], list[float]]:
    """Entry FILLED -> stop ACCEPTED through S6 and S4, one entry at a time: (server ms, client ms)."""
    r = connect(url)
    name = "cluster" if cluster else "single"
    settings = Settings(redis_url=url.replace("redis+cluster://", "redis://"), redis_cluster=cluster,
                        store_url=f"sqlite:///{tmp}/store-{name}.sqlite", objects_url=f"file://{tmp}/objects",
                        claim_idle_ms=5000, block_ms=50)
    procs = [spawn(spec, f"f2s-{name}-{role}", settings, CHIMERA_VENUE_URL=venue.base_url, CHIMERA_LOG_LEVEL="ERROR")
             for role, spec in (("s4", "chimera.handlers.router.role:SPEC"),
                                ("s6", "chimera.handlers.positions.role:SPEC"))]
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(connect(url), WallClock(), f"f2s-{name}", stop), daemon=True)
    sched.start()
    prod, results, api = Producer(r, WallClock()), Results(r), fut(venue)
    server, client = [], []
    try:
        for i in range(WARM + n):  # the first WARM: imports, SDK sessions, leverage, exchangeInfo
            iid, side = f"f2s-{name}-{i}", ("BUY", "SELL")[i % 2]
            close = "SELL" if side == "BUY" else "BUY"
            sl = protective(api.book(SYM).mid, side)
            entry = OrderIntent(intent_id=iid, market="FUT", symbol=SYM, side=side, qty=QTY,
                                exec_policy="MARKET", purpose="ENTRY", sl_price=sl)
            prod.publish(keys.ORD_COMMANDS, SubmitOrder(intent=entry), idempotency_key=iid)
            filled = results.wait(client_order_id(iid, "mkt"), "FILLED")
            stop_cid = client_order_id(f"{iid}:sl1", "sl")
            armed = results.wait(stop_cid, "ACCEPTED")
            at_venue = api.query(SYM, stop_cid, algo=True)  # the source of truth, outside the timed path
            if (at_venue.status, at_venue.side, at_venue.stop_price) != ("NEW", close, sl):
                raise SystemExit(f"{iid}: the venue holds {at_venue}, not a NEW {close} stop at {sl}")
            if i >= WARM:
                server.append(armed[0] - filled[0])
                client.append((armed[1] - filled[1]) * 1000)
            # Flat again before the next entry: S6 books the exit, closes the position and cancels the stop.
            exit_ = OrderIntent(intent_id=f"{iid}:exit", market="FUT", symbol=SYM, side=close, qty=QTY,
                                exec_policy="MARKET", purpose="EXIT", reduce_only=True, pos_id=iid,
                                parent_intent_id=iid)
            prod.publish(keys.ORD_COMMANDS, SubmitOrder(intent=exit_), idempotency_key=exit_.intent_id)
            results.wait(stop_cid, "CANCELED")
        left = api.open_algo_orders(SYM)
        amt = sum(Decimal(p["positionAmt"]) for p in api.position_risk(SYM))
        if left or amt:
            raise SystemExit(f"{name}: the venue is not flat after the run: {len(left)} open stops, position {amt}")
    finally:
        stop.set()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        sched.join(5)
    return server, client


def baseline(url: str, name: str, venue, n: int) -> tuple[list[float], list[float]]:
    """Two raw Redis hops to two threads, the stop placed through the adapter, a done entry: (server, client)."""
    r = connect(url)
    hop1, hop2, done = "bench:{f2s}:hop1", "bench:{f2s}:hop2", "bench:{f2s}:done"
    for s in (hop1, hop2, done):
        r.delete(s)
    for s in (hop1, hop2):
        r.xgroup_create(s, "g", id="$", mkstream=True)
    api = fut(venue)
    f = api.filters(SYM)
    api.new_order(symbol=SYM, side="BUY", type="MARKET", qty=QTY, client_id=f"f2s-base-{name}")
    trigger = f.price(protective(api.book(SYM).mid, "BUY"))
    stop = threading.Event()

    def place(fields) -> None:
        api.new_stop(symbol=SYM, side="SELL", type="STOP_MARKET", qty=QTY, trigger=trigger,
                     client_id=fields[b"cid"].decode())

    def relay(src: str, dst: str, act=None) -> None:
        rc = connect(url)
        while not stop.is_set():
            for _s, entries in rc.xreadgroup("g", "c", {src: ">"}, count=1, block=200) or []:
                for entry_id, fields in entries:
                    if act:
                        act(fields)
                    rc.xadd(dst, fields)
                    rc.xack(src, "g", entry_id)

    threads = [threading.Thread(target=relay, args=a, daemon=True) for a in ((hop1, hop2), (hop2, done, place))]
    for t in threads:
        t.start()
    server, client, last, cancel = [], [], "0-0", fut(venue)
    try:
        for i in range(WARM + n):
            cid = f"f2s-base-{name}-{i}"
            t0 = time.perf_counter()
            first = r.xadd(hop1, {"cid": cid})
            resp = r.xread({done: last}, block=10_000, count=1)
            t1 = time.perf_counter()
            if not resp:
                raise SystemExit("baseline: no done entry within 10 s")
            last = resp[0][1][0][0]
            if i >= WARM:
                server.append(ms(last) - ms(first))
                client.append((t1 - t0) * 1000)
            cancel.cancel(SYM, cid, algo=True)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        api.new_order(symbol=SYM, side="SELL", type="MARKET", qty=QTY, client_id=f"f2s-base-{name}-x",
                      reduce_only=True)
    return server, client


def row(label: str, xs: list[float], note: str = "") -> str:
    return f"  {label:62s}" + "".join(f"{pct(xs, q):7.1f}" for q in (0.5, 0.9, 0.99)) + f"{max(xs):7.1f}  {note}".rstrip()


def report(backend: str, n: int, base: tuple[list[float], list[float]], chim: tuple[list[float], list[float]]) -> None:
    print(f"--- {backend}: {n} entries, one in flight (ms)".ljust(64) + "".join(f"{h:>7s}" for h in ("p50", "p90", "p99", "max")))
    for kind, b, c in (("server clock (stream ids)", base[0], chim[0]), ("client (perf_counter)", base[1], chim[1])):
        ratio = f"x{pct(c, 0.5) / max(pct(b, 0.5), 1e-9):.1f} / x{pct(c, 0.99) / max(pct(b, 0.99), 1e-9):.1f} baseline p50 / p99"
        print(row(f"{kind}: baseline (2 raw hops + adapter stop)", b))
        print(row(f"{kind}: Chimera fill -> stop ACCEPTED", c, ratio))
    worst = max(pct(chim[0], 0.99), pct(chim[1], 0.99))
    print(f"  Chimera p99 {worst:.1f} ms: {'within' if worst <= BUDGET_MS else 'OVER'} the {BUDGET_MS} ms budget")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    logger.remove()  # the scheduler thread's INFO lines would split the table
    logger.add(sys.stderr, level="WARNING")
    # No state file, as in bench_router: the venue would rewrite its whole state (every order so far) as
    # JSON after each order, which makes each request slower the longer the run (~7 ms more per 150 orders).
    venue = start_venue(VenueConfig(data=[DataSpec("ws", WS_2023, "futures", SYM)], state_file=None,
                                    orders_per_10s=1_000_000, orders_per_minute=10_000_000,
                                    weight_per_minute=10_000_000))
    venue.advance(events=3000)  # a real book, trades and mark price before the first order
    servers = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            servers.append(RedisServer())
            servers.append(RedisCluster())
            for backend, srv, cluster in (("single redis-server", servers[0], False),
                                          ("6-node Redis Cluster", servers[1], True)):
                base = baseline(srv.url, "cluster" if cluster else "single", venue, args.n)
                chim = chimera(srv.url, cluster, venue, Path(tmp), args.n)
                report(backend, args.n, base, chim)
    finally:
        venue.stop()
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
