"""S1 → S2 benchmark: market events/s through one S1 publisher and one S2 replica, against raw
Redis XADD + XREADGROUP/XACK of the same entries measured in the same run.

    python tests/bench/bench_features.py [--minutes 300]

Starts its own redis-server. The S1 side is the real publishing code path (``Producer`` for
book tickers and trades, ``publish_closed_kline`` for bars: bar store + XADD) fed from the
repo's real BTC/ETH 1m klines (each minute: 4 trades, 4 book tickers, 1 closed bar per symbol).
S2 is the real ordered worker (leases, engine, signals in SQLite, feature cache, emits).
Reported: events/s end to end (first XADD → last bar featured), raw pipe events/s, ratio.
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

from chimera.handlers.connectors.publish import publish_closed_kline  # noqa: E402
from chimera.handlers.features.role import SPEC  # noqa: E402
from chimera.ops.settings import Settings  # noqa: E402
from chimera.schemas.messages import BookTicker, Kline, Trade  # noqa: E402
from chimera.store import open_store  # noqa: E402
from chimera.streams import keys  # noqa: E402
from chimera.streams.producer import Producer  # noqa: E402
from chimera.streams.redis import connect  # noqa: E402
from chimera.venues.local.loaders import load_freqtrade_klines  # noqa: E402
from chimera.venues.local.replay.feed import SAMPLE_DIR  # noqa: E402
from chimera.workers.clock import WallClock  # noqa: E402
from chimera.workers.runtime import Worker  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402

SYMS = ("BTCUSDT", "ETHUSDT")


def events(minutes: int) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    rows = {s: load_freqtrade_klines(SAMPLE_DIR / f"{s[:-4]}_USDT_USDT-1m-futures.feather")[:minutes] for s in SYMS}
    tid = 0
    for i in range(minutes):
        for s in SYMS:
            t, o, h, lo, c, v = rows[s][i]
            for j, p in enumerate((o, h, lo, c)):
                tid += 1
                bid, ask = p - Decimal("0.1"), p + Decimal("0.1")
                out.append(("trade", Trade(market="perp", symbol=s, trade_id=tid, price=p, qty=v / 4,
                                           buyer_is_maker=bool(j % 2), ts=t + j * 15_000)))
                out.append(("book", BookTicker(market="perp", symbol=s, bid=bid, bid_qty=Decimal(1), ask=ask,
                                               ask_qty=Decimal(1), mid=p, spread_bp=float(Decimal("0.2") / p * 10_000),
                                               ts=t + j * 15_000)))
            out.append(("bar", Kline(market="perp", symbol=s, interval="1m", open_time=t, close_time=t + 59_999,
                                     open=o, high=h, low=lo, close=c, volume=v)))
    return out


def run_pipeline(url: str, evs, tmp: str) -> float:
    r = connect(url)
    r.flushall()
    settings = Settings(redis_url=url, store_url=f"sqlite:///{tmp}/s.sqlite", symbols=SYMS, block_ms=20,
                        lease_ttl_ms=2000)
    store = open_store(settings.store_url)
    worker = Worker(SPEC, r, settings=settings, store=store, clock=WallClock(), consumer="s2-bench")
    th = threading.Thread(target=worker.run, daemon=True)
    th.start()
    while not worker.leases or len(worker.leases.owned) < len(SYMS):
        time.sleep(0.01)
    producer = Producer(r, WallClock())
    bars = sum(1 for k, _ in evs if k == "bar")
    t0 = time.perf_counter()
    for kind, m in evs:
        stream = keys.mkt_stream("perp", m.symbol)
        if kind == "bar":
            publish_closed_kline(r, m, 0)
        elif kind == "trade":
            producer.publish(stream, m, f"trade:{m.symbol}:{m.trade_id}", event_time=m.ts)
        else:
            producer.publish(stream, m, f"book:{m.symbol}:{m.ts}", event_time=m.ts)
    while store.count("signals") < bars:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    worker.stop()
    th.join(10)
    return len(evs) / elapsed


def run_raw(url: str, evs) -> float:
    """The floor: XADD each entry (same payload size), one consumer XREADGROUP + XACK."""
    from chimera.schemas.envelope import encode
    from chimera.streams.producer import Emit, envelope_for

    r = connect(url)
    r.flushall()
    payloads = [(keys.mkt_stream("perp", m.symbol), encode(envelope_for(Emit("x", m, "k"), parent=None, now_ms=0)))
                for _, m in evs]
    streams = sorted({s for s, _ in payloads})
    for s in streams:
        r.xgroup_create(s, "g", id="0", mkstream=True)
    done = threading.Event()
    got = [0]

    def consume():
        c = connect(url)
        while got[0] < len(payloads):
            resp = c.xreadgroup("g", "c", {s: ">" for s in streams}, count=128, block=20) or []
            for stream, entries in resp:
                if entries:
                    c.xack(stream, "g", *[i for i, _ in entries])
                    got[0] += len(entries)
        done.set()

    th = threading.Thread(target=consume, daemon=True)
    t0 = time.perf_counter()
    th.start()
    for s, fields in payloads:
        r.xadd(s, fields)
    done.wait()
    return len(payloads) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=300)
    args = ap.parse_args()
    evs = events(args.minutes)
    server = RedisServer()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = run_raw(server.url, evs)
            pipe = run_pipeline(server.url, evs, tmp)
    finally:
        server.stop()
    print(f"events: {len(evs)} ({args.minutes} min x {len(SYMS)} symbols: trades, book tickers, closed bars)")
    print(f"raw XADD + XREADGROUP/XACK : {raw:10.0f} events/s")
    print(f"S1 publish -> S2 featured   : {pipe:10.0f} events/s")
    print(f"ratio S1->S2 / raw          : {pipe / raw:10.3f}")


if __name__ == "__main__":
    main()
