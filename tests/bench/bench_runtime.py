"""Runtime benchmark: raw Redis ceilings vs. the consumer-group runtime, and per-hop latency.

    python tests/bench/bench_runtime.py [--n 50000]

Starts its own redis-server on a free port. Workers run as real ``chimera-worker`` processes.
Every figure is also printed as a ratio to the raw ceiling measured in the same run.

The ceiling and the no-op runtime are measured the same way, so that a shared machine's load
does not decide the ratio: each is a fresh process consuming a backlog while this process polls
the group until it is drained (start-up excluded), and the two alternate over ``--rounds`` rounds
(medians reported, every round printed; the no-op ratio is the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chimera.handlers.noop import BENCH_STREAM as STREAM  # noqa: E402
from chimera.schemas.envelope import Envelope, encode  # noqa: E402
from chimera.schemas.messages import Noop  # noqa: E402
from chimera.streams import keys  # noqa: E402
from chimera.streams.redis import connect  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402

BATCH = 128  # the runtime's read count, so the ceiling is measured on equal terms


def entries(n: int, prefix: str):
    for i in range(n):
        yield encode(Envelope(type="noop", idempotency_key=f"{prefix}{i}", payload=Noop(n=i, data="x" * 32)))


def fill(r, stream: str, n: int, prefix: str) -> float:
    t = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, fields in enumerate(entries(n, prefix), 1):
        pipe.xadd(stream, fields)
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    return n / (time.perf_counter() - t)


def raw_xadd(r, n: int) -> float:
    data = list(entries(n, "a"))
    t = time.perf_counter()
    for fields in data:
        r.xadd("bench:raw:add", fields)
    return n / (time.perf_counter() - t)


def raw_consumer(url: str, stream: str, group: str) -> None:
    """The ceiling's consumer process: XREADGROUP + XACK, nothing else, until SIGTERM."""
    r = connect(url)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        resp = r.xreadgroup(group, "c", {stream: ">"}, count=BATCH, block=100)
        ids = [i for _, es in resp or [] for i, _ in es]
        if ids:
            r.xack(stream, group, *ids)


def drained(r, stream: str, group: str, n: int) -> bool:
    try:
        g = next(x for x in r.xinfo_groups(stream) if x["name"].decode() == group)
    except Exception:  # no such stream or group yet
        return False
    return g["pending"] == 0 and (g.get("entries-read") or 0) >= n


def consume_rate(r, cmd: list[str], env, stream: str, group: str, n: int) -> float:
    """Entries/s of the process ``cmd`` draining a backlog of ``n`` on ``stream`` as ``group``."""
    r.delete(stream)
    r.xgroup_create(stream, group, id="0", mkstream=True)
    fill(r, stream, n, group)  # backlog first: we measure consumption, not production
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    start = None
    try:
        while not drained(r, stream, group, n):
            if start is None and any(g["pending"] or g.get("entries-read") for g in r.xinfo_groups(stream)):
                start = time.perf_counter()  # the consumer is up: exclude interpreter start-up
            time.sleep(0.002)
        end = time.perf_counter()  # before the stop: a worker's shutdown (joining its reader) is not consumption
    finally:
        proc.terminate()
        proc.wait(10)
    return n / (end - (start or t))


def raw_consume(r, env, url: str, n: int) -> float:
    return consume_rate(r, [sys.executable, __file__, "--raw-consumer", url], env, "bench:raw", "g", n)


def runtime_throughput(r, env, role: str, n: int) -> float:
    return consume_rate(r, [sys.executable, "-m", "chimera.ops.cli", "worker", "--role", role], env, STREAM,
                        keys.group(role), n)


def hop_latency(r, env, samples: int) -> tuple[float, float]:
    """One hop: XADD onto the router-style stream → worker → emit observed downstream."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.bench.hop_worker"], env=env)
    lat = []
    try:
        last = "$"
        end = time.monotonic() + 30
        while not r.exists("bench:hop:in") or not r.xinfo_groups("bench:hop:in"):  # the worker is up
            if time.monotonic() > end or proc.poll() is not None:
                raise SystemExit("the hop worker did not start")
            time.sleep(0.01)
        for i in range(samples + 50):
            sent = time.perf_counter()
            r.xadd("bench:hop:in", encode(Envelope(type="noop", idempotency_key=f"h{i}", payload=Noop(n=i))))
            while True:
                resp = r.xread({"bench:hop:out": last}, block=1000, count=1)
                if resp:
                    last = resp[0][1][-1][0]
                    break
            if i >= 50:  # warm-up excluded
                lat.append((time.perf_counter() - sent) * 1000)
    finally:
        proc.terminate()
        proc.wait(10)
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--raw-consumer", metavar="URL", help=argparse.SUPPRESS)  # the ceiling's child process
    args = ap.parse_args()
    if args.raw_consumer:
        raw_consumer(args.raw_consumer, "bench:raw", "g")
        return
    server = RedisServer()
    r = connect(server.url)
    tmp = tempfile.mkdtemp(prefix="chimera-bench-")
    env = dict(os.environ, CHIMERA_REDIS_URL=server.url, CHIMERA_STORE_URL=f"sqlite:///{tmp}/bench.sqlite",
               CHIMERA_OBJECTS_URL=f"file://{tmp}/objects", CHIMERA_LOG_LEVEL="WARNING", CHIMERA_LOG_JSON="0",
               CHIMERA_BLOCK_MS="100")
    try:
        add = raw_xadd(r, args.n // 2)
        ceilings, noops = [], []
        for _ in range(args.rounds):  # alternating, so both see the same machine
            ceilings.append(raw_consume(r, env, server.url, args.n))
            noops.append(runtime_throughput(r, env, "noop", args.n))
        ceiling, noop = statistics.median(ceilings), statistics.median(noops)
        # Each round's pair ran back to back under the same load: the ratio is taken per pair.
        ratios = [x / c for x, c in zip(noops, ceilings, strict=True)]
        store = runtime_throughput(r, env, "sqlite-bench", args.n // 2)
        p50, p99 = hop_latency(r, env, args.samples)
    finally:
        server.stop()
    print(f"raw XADD (one call per entry)          {add:10.0f} entries/s")
    print(f"rounds: ceiling {[round(c) for c in ceilings]}, no-op runtime {[round(x) for x in noops]}")
    print(f"raw XREADGROUP+XACK (ceiling)          {ceiling:10.0f} entries/s   1.00 x ceiling")
    print(f"runtime, no-op handler                 {noop:10.0f} entries/s   {statistics.median(ratios):.2f} x ceiling "
          f"(median of the rounds' ratios {[round(x, 2) for x in ratios]}; target >= 0.50)")
    print(f"runtime, one SQLite document per entry {store:10.0f} entries/s   {store / ceiling:.2f} x ceiling")
    print(f"hop latency (XADD -> handler -> XADD)  p50 {p50:.3f} ms   p99 {p99:.3f} ms (target p99 <= 5 ms)")


if __name__ == "__main__":
    main()
