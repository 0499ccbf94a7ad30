"""S4 benchmark: SubmitOrder (MARKET) -> venue ack latency and orders/s with 1 and 2 router replicas.

    python tests/bench/bench_router.py [--n 200]

Starts its own redis-server and the local venue (real 2023-04-04 BTCUSDT recording, paused) on
loopback. Replicas are real worker processes (``tests.support.run_worker``). The venue stamps
orders with replay time, so latency is measured from the command's XADD to the router's
OrderResult on ``ord:{results}`` (written after the venue's reply): an upper bound of
command -> venue ack, including the depth snapshot, the trade fetch for ``fills`` and the store.
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
from chimera.venues.local.replay import DataSpec  # noqa: E402
from chimera.venues.local.server.app import VenueConfig  # noqa: E402
from chimera.venues.local.testing import start_venue  # noqa: E402
from chimera.workers.clock import WallClock  # noqa: E402
from tests.conftest import subprocess_env  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402

WS_2023 = "/work/shared/data/market/ws_streams_depth_trades_bookticker/usdm/btcusdt_20230404.dat.gz"


def run(replicas: int, n: int, tmp: Path, redis_url: str, venue) -> dict:
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
            prod.publish(keys.ORD_COMMANDS, SubmitOrder(intent=OrderIntent(
                intent_id=f"w{replicas}-{i}", market="FUT", symbol="BTCUSDT", side="BUY" if i % 2 else "SELL",
                qty=Decimal("0.001"))), idempotency_key=f"w{replicas}-{i}")
        _wait(r, 4 * replicas, 120)
        r.delete(keys.ORD_RESULTS)
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(n):
            iid = f"b{replicas}-{i}"
            sent[iid] = time.perf_counter()
            prod.publish(keys.ORD_COMMANDS, SubmitOrder(intent=OrderIntent(
                intent_id=iid, market="FUT", symbol="BTCUSDT", side="BUY" if i % 2 else "SELL",
                qty=Decimal("0.001"))), idempotency_key=iid)
        lat: list[float] = []
        seen: set[str] = set()
        last = "0-0"
        deadline = time.monotonic() + 300
        while len(seen) < n and time.monotonic() < deadline:
            resp = r.xread({keys.ORD_RESULTS: last}, block=200, count=500)
            now = time.perf_counter()
            for _s, entries in resp or []:
                for entry_id, fields in entries:
                    last = entry_id
                    res = decode(fields).payload
                    if res.intent_id in sent and res.intent_id not in seen:
                        seen.add(res.intent_id)
                        lat.append((now - sent[res.intent_id]) * 1000)
        elapsed = time.perf_counter() - t0
        lat.sort()
        return {"replicas": replicas, "orders": len(seen), "orders_per_s": len(seen) / elapsed,
                "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))]}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


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
            for replicas in (1, 2):
                out = run(replicas, args.n, Path(tmp), server.url, venue)
                print(f"replicas={out['replicas']} orders={out['orders']} orders/s={out['orders_per_s']:.1f} "
                      f"p50={out['p50_ms']:.1f}ms p99={out['p99_ms']:.1f}ms")
        finally:
            venue.stop()
            server.stop()


if __name__ == "__main__":
    main()
