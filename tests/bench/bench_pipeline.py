"""Pipeline benchmark: Decide -> S3 -> S4 -> venue ack (-> S6 stop armed), against the raw Redis ceiling.

    python tests/bench/bench_pipeline.py [--n 200] [--latency-samples 100] [--replicas 2]

Starts its own redis-server, the local venue in-process (the shipped BTC/ETH sample, paused, no
faults, high rate limits) and real worker processes (s3, s4 x replicas, s6, forked from the
pre-warmed fork server the chaos drill uses). Intents are real S3 decisions (the drill bundle:
MARKET entries, limits high). Figures, each with its ratio to the raw Redis measures of the same run:

* raw XADD rate, raw XREADGROUP+XACK rate (the ceiling), raw hop latency (XADD -> XREADGROUP);
* latency, one intent at a time: Decide XADD -> S4's FILLED OrderResult for the entry (written
  after the venue's answer: an upper bound of intent -> venue ack), and -> the stop S6 asked for
  ACCEPTED at the venue (the position is protected);
* throughput: N Decides at once -> intents/s entry-acked and protected.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chimera.handlers.strategy.sizing import ids_for  # noqa: E402
from chimera.ops.settings import load_settings  # noqa: E402
from chimera.ops.streams_admin import init_groups  # noqa: E402
from chimera.ops.tools import drill  # noqa: E402
from chimera.ops.tools.fleet import Fleet  # noqa: E402
from chimera.schemas.envelope import decode  # noqa: E402
from chimera.schemas.messages import Decide  # noqa: E402
from chimera.store import open_store  # noqa: E402
from chimera.streams import keys  # noqa: E402
from chimera.streams.producer import Producer  # noqa: E402
from chimera.streams.redis import connect  # noqa: E402
from chimera.venues.local.server.app import VenueConfig  # noqa: E402
from chimera.venues.local.testing import start_venue  # noqa: E402
from chimera.workers.clock import WallClock  # noqa: E402
from chimera.workers.config import activate  # noqa: E402
from tests.bench.bench_runtime import raw_consume, raw_xadd  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402


def raw_hop(r, samples: int) -> list[float]:
    """XADD then XREADGROUP(+XACK) of that entry: the Redis cost of one hop, nothing else."""
    r.xgroup_create("bench:rawhop", "g", id="$", mkstream=True)
    lat = []
    for i in range(samples):
        t = time.perf_counter()
        r.xadd("bench:rawhop", {"n": i})
        resp = r.xreadgroup("g", "c", {"bench:rawhop": ">"}, count=1, block=1000)
        r.xack("bench:rawhop", "g", resp[0][1][0][0])
        lat.append((time.perf_counter() - t) * 1000)
    return lat


class Results:
    """Follows ord:{results}: when each intent's entry was FILLED and its first stop ACCEPTED."""

    def __init__(self, r) -> None:
        self.r, self.last = r, "0-0"
        self.filled: dict[str, float] = {}
        self.armed: dict[str, float] = {}

    def poll(self, block_ms: int = 50) -> None:
        resp = self.r.xread({keys.ORD_RESULTS: self.last}, block=block_ms, count=1000)
        now = time.perf_counter()
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                self.last = entry_id
                res = decode(fields).payload
                if res.purpose == "ENTRY" and res.status == "FILLED":
                    self.filled.setdefault(res.intent_id, now)
                elif res.purpose == "STOP" and res.status == "ACCEPTED":
                    self.armed.setdefault(res.intent_id, now)

    def wait(self, intents: list[str], stops: list[str], timeout_s: float = 300) -> None:
        end = time.monotonic() + timeout_s
        while not (all(i in self.filled for i in intents) and all(s in self.armed for s in stops)):
            if time.monotonic() > end:
                raise SystemExit(f"timed out: {sum(i in self.filled for i in intents)}/{len(intents)} filled, "
                                 f"{sum(s in self.armed for s in stops)}/{len(stops)} protected")
            self.poll()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="intents pushed at once for the throughput figure")
    ap.add_argument("--latency-samples", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=2, help="S4 replicas")
    args = ap.parse_args()
    server = RedisServer()
    root = Path(tempfile.mkdtemp(prefix="chimera-bench-pipeline-"))
    (root / "logs").mkdir()
    venue = start_venue(VenueConfig(speed=0, orders_per_10s=10_000_000, orders_per_minute=10_000_000,
                                    weight_per_minute=10_000_000))
    venue.advance(events=40)
    fleet = None
    try:
        r = connect(server.url)
        add = raw_xadd(r, 20_000)
        ceiling = raw_consume(r, 40_000)
        hop = raw_hop(r, 2000)
        r.flushall()
        env = drill.worker_env(server.url, root, venue.base_url)
        settings = load_settings(env)
        store = open_store(settings.store_url)
        bundle = json.loads(drill.BUNDLE.read_text())
        bundle["reconciler"] = {"interval_ms": 0}
        activate(store, bundle["bundle_id"], 1, bundle)
        init_groups(r, settings)
        warm, lat_n, n = 10, args.latency_samples, args.n
        signals = drill.write_signals(store, venue, warm + lat_n + n, "bench")
        roles = [("s3", "s3"), *((f"s4-{i}", "s4") for i in range(args.replicas)), ("s6", "s6")]
        fleet = Fleet(env, root / "logs", [role for _, role in roles])
        for name, role in roles:
            fleet.spawn(name, role)
        producer = Producer(r, WallClock())
        results = Results(r)

        def push(batch) -> tuple[list[str], list[str], dict[str, float]]:
            sent, intents, stops = {}, [], []
            for sid, symbol, side in batch:
                pos_id, intent_id = ids_for(sid)
                sent[intent_id] = time.perf_counter()
                producer.publish(keys.STRAT_COMMANDS, Decide(signal_id=sid, symbol=symbol, side=side),
                                 idempotency_key=f"decide:{sid}")
                intents.append(intent_id)
                stops.append(f"{pos_id}:sl1")
            return intents, stops, sent

        intents, stops, _ = push(signals[:warm])  # warm-up: sessions, exchangeInfo, SQLite pages
        results.wait(intents, stops)
        entry_lat, armed_lat = [], []
        for sig in signals[warm:warm + lat_n]:
            (intent,), (stop,), sent = push([sig])
            results.wait([intent], [stop])
            entry_lat.append((results.filled[intent] - sent[intent]) * 1000)
            armed_lat.append((results.armed[stop] - sent[intent]) * 1000)
        t0 = time.perf_counter()
        intents, stops, _ = push(signals[warm + lat_n:])
        results.wait(intents, stops)
        entry_rate = n / (max(results.filled[i] for i in intents) - t0)
        armed_rate = n / (max(results.armed[s] for s in stops) - t0)
    finally:
        if fleet is not None:
            fleet.stop()
        venue.stop()
        server.stop()
    hop50, hop99 = statistics.median(hop), pct(hop, 0.99)
    print(f"raw XADD (one call per entry)              {add:10.0f} entries/s")
    print(f"raw XREADGROUP+XACK (the ceiling)          {ceiling:10.0f} entries/s   1.00 x ceiling")
    print(f"raw hop XADD -> XREADGROUP+XACK            p50 {hop50:7.2f} ms   p99 {hop99:7.2f} ms   1.00 x raw hop")
    for label, lat in (("Decide -> entry venue ack (S3, S4)", entry_lat),
                       ("Decide -> stop armed at venue (S6)", armed_lat)):
        p50, p99 = statistics.median(lat), pct(lat, 0.99)
        print(f"{label:42s} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   {p50 / hop50:.0f} x / {p99 / hop99:.0f} x raw hop")
    print(f"throughput, {n} at once, {args.replicas} S4 replica(s):")
    print(f"  entry acked at the venue                 {entry_rate:10.1f} intents/s   {entry_rate / ceiling:.5f} x ceiling")
    print(f"  protected (stop armed)                   {armed_rate:10.1f} intents/s   {armed_rate / ceiling:.5f} x ceiling")


if __name__ == "__main__":
    main()
