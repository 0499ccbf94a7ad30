"""S1 → S2 benchmark: market events/s through one S1 publisher and one S2 replica (a separate
process, as in production), against raw Redis measured in the same run on the same entries.

    python tests/bench/bench_features.py [--minutes 300] [--profile s1|s2]

Starts its own redis-server. Two workloads of real Binance data, as the frames the SDK hands S1:

* ``klines``: the repo's BTC/ETH 1m klines, each minute per symbol = 4 aggTrades (the O/H/L/C
  path), 4 bookTickers, 1 closed kline. Bar-heavy: the worst case for S2, which computes
  features on every bar.
* ``recorded``: the 2024-08-08 USDT-M WebSocket recordings of BTC and ETH (real trades,
  bookTickers and diff depth, ~6 min), with 1m klines built from those trades. S1 keeps the two
  local order books (snapshot + diffs, from the recording) and publishes top-20 DepthLevels.

S1 is the real ``MarketDataConnector.publish_batch`` (normalize, debounce, depth books, one
``BatchWriter`` flush per batch), fed batches of up to 1,000 frames as its publisher drains them
when behind. S2 is the real ordered worker (``python -m tests.support.run_worker``: leases,
engines, signals in SQLite, the state cache once per read batch, emits).

Reported per workload: S1 → S2 end to end (first frame → S2 has read and acked every entry: the
consumer group's lag and pending are 0) in frames/s and market entries/s; S1 and S2 each alone, per
CPU second (the machine is shared: CPU time is the figure other load does not inflate); the raw
floor on exactly those entries (pipelined XADD per 1,000 + one XREADGROUP(count=128)/XACK consumer
process); the ratio of the end-to-end entries/s to the raw floor.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import multiprocessing
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chimera.feeds.market import MAX_BATCH, MarketDataConnector  # noqa: E402
from chimera.streams import keys  # noqa: E402
from chimera.streams.redis import connect  # noqa: E402
from chimera.venues.local.loaders import load_freqtrade_klines  # noqa: E402
from chimera.venues.local.replay.feed import SAMPLE_DIR  # noqa: E402
from chimera.workers.clock import WallClock  # noqa: E402
from tests.support.order_books import RECORDINGS  # noqa: E402
from tests.support.polling import group_caught_up  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402

SYMS = ("BTCUSDT", "ETHUSDT")
GROUP = keys.group("s2")


def _frame(stream: str, data: dict) -> tuple[str, dict, float]:
    return ("frame", {"stream": stream, "data": data}, time.monotonic())


def _kline(sym: str, t: int, o, h, lo, c, v, event_ms: int) -> tuple[str, dict, float]:
    return _frame(f"{sym.lower()}@kline_1m", {"e": "kline", "E": event_ms, "s": sym, "k": {
        "t": t, "T": t + 59_999, "s": sym, "i": "1m", "o": str(o), "h": str(h), "l": str(lo), "c": str(c),
        "v": str(v), "x": True}})


def kline_frames(minutes: int) -> tuple[list, dict]:
    rows = {s: load_freqtrade_klines(SAMPLE_DIR / f"{s[:-4]}_USDT_USDT-1m-futures.feather")[:minutes] for s in SYMS}
    out, tid = [], 0
    for i in range(minutes):
        for s in SYMS:
            t, o, h, lo, c, v = rows[s][i]
            low = s.lower()
            for j, p in enumerate((o, h, lo, c)):
                tid += 1
                ts = t + j * 15_000
                out.append(_frame(f"{low}@aggTrade", {"e": "aggTrade", "E": ts, "s": s, "a": tid, "p": str(p),
                                                       "q": str(v / 4), "f": tid, "l": tid, "T": ts, "m": bool(j % 2)}))
                out.append(_frame(f"{low}@bookTicker", {"e": "bookTicker", "u": tid, "s": s, "b": str(p - 1),
                                                         "B": "1", "a": str(p + 1), "A": "1", "T": ts, "E": ts}))
            out.append(_kline(s, t, o, h, lo, c, v, t + 60_000))
    return out, {}


def recorded_frames() -> tuple[list, dict]:
    """The two recordings merged by exchange time; klines from the trades; the REST snapshots."""
    merged, snapshots = [], {}
    for sym in SYMS:
        bar: list | None = None
        with gzip.open(RECORDINGS / "usdm" / f"{sym.lower()}_20240808.gz", "rt") as fh:
            for n, line in enumerate(fh):
                msg = json.loads(line.partition(" ")[2])
                if "stream" not in msg:
                    snapshots[sym] = msg
                    continue
                d = msg["data"]
                t = int(d.get("T") or d.get("E"))
                name = msg["stream"]
                if name.endswith("@trade"):
                    name = name.replace("@trade", "@aggTrade")
                    p, q, minute = float(d["p"]), float(d["q"]), t // 60_000 * 60_000
                    if bar is not None and minute > bar[0]:
                        merged.append((t, n - 0.5, _kline(sym, *bar, event_ms=t)))
                        bar = None
                    if bar is None:
                        bar = [minute, p, p, p, p, 0.0]
                    bar[2], bar[3], bar[4], bar[5] = max(bar[2], p), min(bar[3], p), p, bar[5] + q
                merged.append((t, n, _frame(name, d)))
    merged.sort(key=lambda x: (x[0], x[1]))
    return [f for *_, f in merged], snapshots


# --- the S1 -> S2 pipeline -----------------------------------------------------------------------


def start_s2(url: str, tmp: str) -> subprocess.Popen:
    env = dict(os.environ, CHIMERA_REDIS_URL=url, CHIMERA_STORE_URL=f"sqlite:///{tmp}/s2.sqlite",
               CHIMERA_SYMBOLS=",".join(SYMS), CHIMERA_BLOCK_MS="20", CHIMERA_LEASE_TTL_MS="2000",
               CHIMERA_LOG_LEVEL="WARNING", CHIMERA_LOG_JSON="0",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen([sys.executable, "-m", "tests.support.run_worker", "chimera.handlers.features.role:SPEC",
                             "s2-bench"], env=env)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (a figure that other load on the machine does not inflate)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_leased(r, streams: list[str]) -> None:
    while not all(r.exists(keys.lease_key("s2", s)) for s in streams):
        time.sleep(0.01)


def publish_all(r, frames: list, snapshots: dict, profile: str | None) -> float:
    """S1's publisher over every frame, in drained batches; returns the CPU seconds it took."""
    conn = MarketDataConnector(r=r, clock=WallClock(), ws_url="", rest=None, symbols=list(SYMS),
                               depth_levels=20 if snapshots else 0, depth_snapshot=lambda s: snapshots[s])
    prof = cProfile.Profile() if profile == "s1" else None
    t0 = time.process_time()
    if prof:
        prof.enable()
    for i in range(0, len(frames), MAX_BATCH):
        conn.publish_batch(frames[i:i + MAX_BATCH])
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    return time.process_time() - t0


def run_pipeline(url: str, frames: list, snapshots: dict, tmp: str, profile: str | None) -> dict:
    """S1 and S2 concurrently, then each alone (S1 into an idle Redis, S2 on the full backlog)."""
    r = connect(url)
    streams = [keys.mkt_stream("perp", s) for s in SYMS]
    out = {}
    for phase in ("together", "alone"):
        r.flushall()
        s2 = start_s2(url, f"{tmp}/{phase}") if phase == "together" else None
        try:
            if s2:
                wait_leased(r, streams)
            t0 = time.perf_counter()
            s1_cpu = publish_all(r, frames, snapshots, profile if phase == "alone" else None)
            if s2 is None:
                out["s1_cpu_s"] = s1_cpu
                s2 = start_s2(url, f"{tmp}/{phase}")
                wait_leased(r, streams)
                t0 = time.perf_counter()
            cpu0 = cpu_seconds(s2.pid) if phase == "alone" else 0.0
            while not all(group_caught_up(r, s, GROUP) for s in streams):
                time.sleep(0.002)
            if phase == "together":
                out["together_s"] = time.perf_counter() - t0
            else:
                out["s2_alone_s"] = time.perf_counter() - t0
                out["s2_cpu_s"] = cpu_seconds(s2.pid) - cpu0
            out["entries"] = sum(r.xlen(s) for s in streams)
        finally:
            s2.terminate()
            s2.wait(20)
    return out


# --- the raw floor ---------------------------------------------------------------------------------


def raw_consumer(url: str, streams: list[str], total: int) -> None:
    c = connect(url)
    c.set("bench:ready", 1)
    got = 0
    while got < total:
        resp = c.xreadgroup("g", "c", {s: ">" for s in streams}, count=128, block=20) or []
        for stream, entries in resp:
            if entries:
                c.xack(stream, "g", *[i for i, _ in entries])
                got += len(entries)


def run_raw(url: str) -> float:
    r = connect(url)
    streams = [keys.mkt_stream("perp", s) for s in SYMS]
    entries = sorted(((eid, s, f) for s in streams for eid, f in r.xrange(s)), key=lambda e: e[0])
    r.flushall()
    for s in streams:
        r.xgroup_create(s, "g", id="0", mkstream=True)
    proc = multiprocessing.get_context("spawn").Process(target=raw_consumer, args=(url, streams, len(entries)))
    proc.start()
    while not r.exists("bench:ready"):
        time.sleep(0.005)
    t0 = time.perf_counter()
    for i in range(0, len(entries), MAX_BATCH):
        pipe = r.pipeline(transaction=False)
        for _, s, fields in entries[i:i + MAX_BATCH]:
            pipe.xadd(s, fields)
        pipe.execute()
    proc.join()
    return len(entries) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=300)
    ap.add_argument("--workload", choices=("klines", "recorded", "both"), default="both")
    ap.add_argument("--profile", choices=("s1",), default=None, help="cProfile the S1 publisher")
    args = ap.parse_args()
    loads = {"klines": lambda: kline_frames(args.minutes), "recorded": recorded_frames}
    chosen = list(loads) if args.workload == "both" else [args.workload]
    for name in chosen:
        frames, snapshots = loads[name]()
        server = RedisServer()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                got = run_pipeline(server.url, frames, snapshots, tmp, args.profile)
                raw = run_raw(server.url)
        finally:
            server.stop()
        n, entries = len(frames), got["entries"]
        print(f"[{name}] {n} frames in -> {entries} market entries (bookTicker/depth debounced per batch)")
        print(f"[{name}] S1 -> S2 end to end      : {n / got['together_s']:9.0f} frames/s"
              f" = {entries / got['together_s']:9.0f} entries/s")
        print(f"[{name}] S1 per CPU second        : {n / got['s1_cpu_s']:9.0f} frames/s")
        print(f"[{name}] S2 alone on the backlog  : {entries / got['s2_alone_s']:9.0f} entries/s,"
              f" per CPU second {entries / got['s2_cpu_s']:9.0f} entries/s")
        print(f"[{name}] raw XADD+XREADGROUP/XACK : {raw:9.0f} entries/s")
        print(f"[{name}] ratio S1->S2 / raw       : {entries / got['together_s'] / raw:9.3f} (entries/s)")


if __name__ == "__main__":
    main()
