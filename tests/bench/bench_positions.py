"""S6 on the hot market stream: what consuming ``mkt:events:{perp}:<SYM>`` for mark prices costs.

    python tests/bench/bench_positions.py [--n 40000]

S6 reads the perp stream to act on ``MarkPrice`` only; book tickers, trades and the rest must pass
through cheaply (no lock, no idempotency marker). The stream is filled with real events from the
2023-04-04 BTCUSDT recording (bookTicker, trade, markPrice, repeated to ``--n``), then consumed by
an in-process S6 worker, and by the runtime's no-op handler as the baseline measured in the same
run. No position is open, so marks only update ``pos:{mark}:<SYM>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chimera.handlers.noop import SPEC as NOOP  # noqa: E402
from chimera.handlers.positions.role import SPEC as S6  # noqa: E402
from chimera.ops.settings import Settings  # noqa: E402
from chimera.schemas.envelope import encode  # noqa: E402
from chimera.schemas.messages import MarkPrice  # noqa: E402
from chimera.store import open_store  # noqa: E402
from chimera.streams import keys  # noqa: E402
from chimera.streams.producer import Emit, envelope_for  # noqa: E402
from chimera.streams.redis import connect  # noqa: E402
from chimera.venues.binance import market_data as md  # noqa: E402
from chimera.workers.clock import WallClock  # noqa: E402
from chimera.workers.runtime import Worker  # noqa: E402
from tests.support.futures_venue import WS_2023  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402

SYM = "BTCUSDT"
NORMALIZE = {"bookTicker": md.normalize_book_ticker, "trade": md.normalize_agg_trade,
             "markPrice": lambda d, market="perp": md.normalize_mark_price(d)}


def recorded(n: int) -> tuple[list[dict], int]:
    msgs = []
    with gzip.open(WS_2023, "rt") as fh:
        for line in fh:
            frame = json.loads(line.split(" ", 1)[1])
            kind = frame.get("stream", "@snapshot").split("@")[1]
            if kind in NORMALIZE:
                msgs.append(NORMALIZE[kind](frame["data"]))
    out, marks = [], 0
    for i in range(n):  # repeated rounds get fresh keys and later mark times
        m = msgs[i % len(msgs)]
        lap = i // len(msgs)
        if lap and hasattr(m, "ts"):
            m = type(m)(**{**{f: getattr(m, f) for f in m.__struct_fields__}, "ts": m.ts + lap * 10**7})
        marks += isinstance(m, MarkPrice)
        out.append(encode(envelope_for(Emit(keys.mkt_stream("perp", SYM), m, f"b{i}"), parent=None, now_ms=0)))
    return out, marks


def consume(r, spec, settings, store, stream: str, fields: list[dict]) -> float:
    r.delete(stream)
    pipe = r.pipeline(transaction=False)
    for f in fields:
        pipe.xadd(stream, f)
    pipe.execute()
    worker = Worker(spec, r, settings=settings, store=store, clock=WallClock(), consumer="bench")
    thread = threading.Thread(target=worker.run, daemon=True)
    t = time.perf_counter()
    thread.start()
    group = keys.group(spec.role)
    while True:
        groups = {g["name"].decode(): g for g in r.xinfo_groups(stream)} if r.exists(stream) else {}
        g = groups.get(group)
        if g and g["pending"] == 0 and (g.get("entries-read") or 0) >= len(fields):
            break
        time.sleep(0.002)
    elapsed = time.perf_counter() - t
    worker.stop()
    thread.join(10)
    return len(fields) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40_000)
    args = ap.parse_args()
    server = RedisServer()
    r = connect(server.url)
    tmp = tempfile.mkdtemp(prefix="chimera-bench-")
    settings = Settings(redis_url=server.url, store_url=f"sqlite:///{tmp}/s.sqlite", objects_url=f"file://{tmp}/o",
                        symbols=(SYM,), block_ms=50)
    store = open_store(settings.store_url)
    stream = keys.mkt_stream("perp", SYM)
    fields, marks = recorded(args.n)
    try:
        base = consume(r, dataclasses.replace(NOOP, streams=lambda _settings: [stream]), settings, store, stream,
                       fields)
        s6 = consume(r, S6, settings, store, stream, fields)
    finally:
        server.stop()
    print(f"perp events: {args.n} real (bookTicker/trade/markPrice), {marks} marks")
    print(f"runtime, no-op handler (baseline)      {base:10.0f} events/s   1.00 x baseline")
    print(f"S6 on the perp stream (no position)    {s6:10.0f} events/s   {s6 / base:.2f} x baseline")



if __name__ == "__main__":
    main()
