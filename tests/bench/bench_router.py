"""S4 benchmark: SubmitOrder (MARKET) -> venue ack latency and orders/s with 1 and 2 router replicas.

    python tests/bench/bench_router.py [--n 200]

Starts its own redis-server and the local venue (real 2023-04-04 BTCUSDT recording, paused) on
loopback. Replicas are real worker processes (``tests.support.run_worker``). The venue stamps
orders with replay time, so latency is measured from the command's XADD to the router's
OrderResult on ``ord:{results}`` (written after the venue's reply): an upper bound of
command -> venue ack, including the depth snapshot, the trade fetch for ``fills`` and the store.
Latency is taken with one command in flight (paced); orders/s from a burst of ``--n`` commands
published at once (whose queued latencies are printed too).

Baseline, measured in the same run against the same venue: the same MARKET orders sent directly
through the adapter (official SDK, one client, sequential): the floor the router adds its work to.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chimera.ops.settings import Settings  # noqa: E402
from chimera.schemas.envelope import decode  # noqa: E402
from chimera.schemas.messages import OrderIntent, SubmitOrder  # noqa: E402
from chimera.streams import keys  # noqa: E402
from chimera.streams.producer import Producer  # noqa: E402
from chimera.streams.redis import connect  # noqa: E402
from chimera.venues.binance.adapter import FuturesTrading  # noqa: E402
from chimera.venues.local.replay import DataSpec  # noqa: E402
from chimera.venues.local.server.app import VenueConfig  # noqa: E402
from chimera.venues.local.testing import start_venue  # noqa: E402
from chimera.workers.clock import WallClock  # noqa: E402
from tests.conftest import subprocess_env  # noqa: E402
from tests.support.futures_venue import WS_2023  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402


def _intent(iid: str, i: int) -> SubmitOrder:
    return SubmitOrder(intent=OrderIntent(intent_id=iid, market="FUT", symbol="BTCUSDT", side="BUY" if i % 2 else "SELL",
                                          qty=Decimal("0.001")))


def _collect(r, sent: dict[str, float], last: str, timeout: float = 300) -> tuple[list[float], str]:
    """Latency (ms) from each command's publish to its OrderResult on ord:{results}."""
    lat: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(lat) < len(sent) and time.monotonic() < deadline:
        resp = r.xread({keys.ORD_RESULTS: last}, block=200, count=500)
        now = time.perf_counter()
        for _s, entries in resp or []:
            for entry_id, fields in entries:
                last = entry_id
                iid = decode(fields).payload.intent_id
                if iid in sent and iid not in lat:
                    lat[iid] = (now - sent[iid]) * 1000
    return sorted(lat.values()), last


def run(replicas: int, n: int, tmp: Path, redis_url: str, venue) -> dict:
    """Paced phase (one command in flight): latency. Burst phase (n published at once): orders/s."""
    r = connect(redis_url)
    r.flushall()
    settings = Settings(redis_url=redis_url, store_url=f"sqlite:///{tmp}/store-{replicas}.sqlite",
                        objects_url=f"file://{tmp}/objects", claim_idle_ms=5000, block_ms=50)
    env = subprocess_env(settings, CHIMERA_VENUE_URL=venue.base_url, CHIMERA_LOG_LEVEL="ERROR")
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.run_worker",
                               "chimera.handlers.router.role:SPEC", f"bench-{replicas}-{i}"], env=env)
             for i in range(replicas)]
    try:
        prod = Producer(r, WallClock())
        # Warm-up: imports, SDK sessions, exchangeInfo cache in every replica.
        for i in range(4 * replicas):
            prod.publish(keys.ORD_COMMANDS, _intent(f"w{replicas}-{i}", i), idempotency_key=f"w{replicas}-{i}")
        _wait(r, 4 * replicas, 120)
        last = r.xinfo_stream(keys.ORD_RESULTS)["last-generated-id"]
        paced: list[float] = []
        for i in range(min(n, 100)):
            iid = f"p{replicas}-{i}"
            sent = {iid: time.perf_counter()}
            prod.publish(keys.ORD_COMMANDS, _intent(iid, i), idempotency_key=iid)
            got, last = _collect(r, sent, last, timeout=30)
            paced += got
        paced.sort()
        sent = {}
        t0 = time.perf_counter()
        for i in range(n):
            iid = f"b{replicas}-{i}"
            sent[iid] = time.perf_counter()
            prod.publish(keys.ORD_COMMANDS, _intent(iid, i), idempotency_key=iid)
        burst, last = _collect(r, sent, last)
        elapsed = time.perf_counter() - t0
        return {"replicas": replicas, "orders": len(burst), "orders_per_s": len(burst) / elapsed,
                "p50_ms": statistics.median(paced), "p99_ms": paced[int(0.99 * (len(paced) - 1))],
                "burst_p50_ms": statistics.median(burst), "burst_p99_ms": burst[int(0.99 * (len(burst) - 1))]}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def baseline(venue, n: int) -> dict:
    """Direct adapter -> venue MARKET orders, one at a time: the venue's own ack latency."""
    key, secret = venue.keys["main"]
    client = FuturesTrading(venue.base_url, key, secret)
    client.filters("BTCUSDT")
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        start = time.perf_counter()
        client.new_order(symbol="BTCUSDT", side="BUY" if i % 2 else "SELL", type="MARKET", qty=Decimal("0.001"),
                         client_id=f"base-{i}")
        lat.append((time.perf_counter() - start) * 1000)
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {"orders": n, "orders_per_s": n / elapsed, "p50_ms": statistics.median(lat),
            "p99_ms": lat[int(0.99 * (n - 1))]}


def _wait(r, count: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while r.xlen(keys.ORD_RESULTS) < count:
        if time.monotonic() > end:
            raise SystemExit("warm-up orders did not complete")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    server = RedisServer()
    with tempfile.TemporaryDirectory() as tmp:
        venue = start_venue(VenueConfig(data=[DataSpec("ws", WS_2023, "futures", "BTCUSDT")],
                                        state_file=None, orders_per_10s=1_000_000, orders_per_minute=10_000_000,
                                        weight_per_minute=10_000_000))
        venue.advance(events=3000)
        try:
            base = baseline(venue, args.n)
            print(f"baseline (adapter -> venue, sequential) orders={base['orders']} "
                  f"orders/s={base['orders_per_s']:.1f} p50={base['p50_ms']:.1f}ms p99={base['p99_ms']:.1f}ms")
            one = None
            for replicas in (1, 2):
                out = run(replicas, args.n, Path(tmp), server.url, venue)
                one = one or out
                print(f"replicas={out['replicas']} command->ack p50={out['p50_ms']:.1f}ms p99={out['p99_ms']:.1f}ms "
                      f"(x{out['p50_ms'] / base['p50_ms']:.1f} baseline p50) | burst of {out['orders']}: "
                      f"orders/s={out['orders_per_s']:.1f} (x{out['orders_per_s'] / one['orders_per_s']:.2f} of 1 "
                      f"replica), queued p50={out['burst_p50_ms']:.0f}ms p99={out['burst_p99_ms']:.0f}ms")
        finally:
            venue.stop()
            server.stop()


if __name__ == "__main__":
    main()
