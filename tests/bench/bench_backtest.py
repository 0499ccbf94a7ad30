"""Benchmark ``chimera backtest`` against backtesting.py on the same bars (issue 12 item 7).

Run as a script (not collected by pytest)::

    python tests/bench/bench_backtest.py [--copies 10] [--sample-days 1] [--profile]
    python tests/bench/bench_backtest.py --year [--days 365]

Prints, in one run: bars/s of the in-process backtest (the real S2 → S3 → S4 → S6 handlers against
the venue engine) for the SMA(20/60) crossover bundle over the shipped BTCUSDT 1m data repeated
``--copies`` times (10 → ~107k bars, each copy shifted in time to follow the previous one, every other
one time-reversed so the price has no jump at the seams), bars/s of
backtesting.py's SmaCross on the same bars, their ratio, whether the trade lists agree (entry/exit bar
and side; both fill a crossover at the next bar's open), the sample bundle's bars/s and the peak RSS. ``--profile`` prints the
top of a cProfile of the SMA run.

``--year`` measures item 7's memory bound instead, in a process of its own so nothing else counts:
the sample bundle over a year of 1m bars of BTCUSDT and ETHUSDT (two feather files of 525,600 bars
each, plus 8h funding), built from the shipped week of real bars played forward, then backward
(time-reversed), then forward again…, so the series stays continuous and within the week's range.
Prints bars, bars per CPU s and the peak RSS against the 500 MB budget.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "chimera" / "venues" / "local" / "data"
from chimera.backtest.parity import SMA_CROSS_BUNDLE as SMA_BUNDLE  # noqa: E402 - after the sys.path line
from chimera.backtest.parity import as_bars  # noqa: E402


def write_data(tmp: Path, copies: int) -> tuple[Path, list]:
    """The shipped BTC 1m bars ``copies`` times, each copy starting right after the previous one, every
    other copy time-reversed (a bar's close becomes its open) so the prices stay continuous at each seam.

    Plain repeats jumped ~9 % at every seam (the week ends far above where it starts): the SMA bundle's
    200-ATR stop, which real data never reaches, took that gap, while SmaCross has no stop, so the trade
    lists parted there for a reason neither engine's logic has (first difference at the first seam).
    """
    import pandas as pd

    df = pd.read_feather(SAMPLE / "BTC_USDT_USDT-1m-futures.feather")
    t = (df["date"].astype("int64") // 1_000_000).tolist()
    span = t[-1] - t[0] + 60_000
    o, h, lo, c, v = (df[x].tolist() for x in ("open", "high", "low", "close", "volume"))
    fwd = list(zip(o, h, lo, c, v, strict=True))
    back = [(b[3], b[1], b[2], b[0], b[4]) for b in reversed(fwd)]
    rows = [[ts + k * span, *(fwd if k % 2 == 0 else back)[i]] for k in range(copies) for i, ts in enumerate(t)]
    path = tmp / "BTC_USDT_USDT-1m-futures.json"
    path.write_text(json.dumps(rows))
    return path, rows


def write_year(tmp: Path, days: int) -> list[str]:
    """Two symbols' 1m bars and 8h funding over ``days`` days (see the module docstring)."""
    import pandas as pd

    specs = []
    for coin in ("BTC", "ETH"):
        df = pd.read_feather(SAMPLE / f"{coin}_USDT_USDT-1m-futures.feather")
        week = df[["open", "high", "low", "close", "volume"]].to_numpy()
        back = week[::-1][:, [3, 1, 2, 0, 4]]  # time-reversed: a bar's close becomes its open
        n = days * 1440
        blocks, have, k = [], 0, 0
        while have < n:
            blocks.append(week if k % 2 == 0 else back)
            have += len(week)
            k += 1
        import numpy as np

        bars = np.concatenate(blocks)[:n]
        start = int(df["date"].iloc[0].timestamp() * 1000)
        frame = pd.DataFrame(bars, columns=["open", "high", "low", "close", "volume"])
        frame.insert(0, "date", pd.to_datetime(start + np.arange(n, dtype="int64") * 60_000, unit="ms", utc=True).astype("datetime64[ns, UTC]"))
        kl = tmp / f"{coin}_USDT_USDT-1m-futures.feather"
        frame.to_feather(kl)
        rates = pd.read_feather(SAMPLE / f"{coin}_USDT_USDT-8h-funding_rate.feather")["open"].to_numpy()
        m = days * 3
        fund = pd.DataFrame({"open": np.resize(rates, m)})
        fund.insert(0, "date", pd.to_datetime(start + np.arange(m, dtype="int64") * 8 * 3_600_000, unit="ms", utc=True).astype("datetime64[ns, UTC]"))
        for c in ("high", "low", "close", "volume"):
            fund[c] = fund["open"] if c != "volume" else 0.0
        fr = tmp / f"{coin}_USDT_USDT-8h-funding_rate.feather"
        fund.to_feather(fr)
        specs += [str(kl), str(fr)]
    return specs


def main_year(days: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        data = write_year(Path(tmp_s), days)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result, wall, cpu = run_chimera(REPO / "chimera" / "bundles" / "sample_vol_breakout.json", data)
    k = result.run["kpis"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"chimera backtest, sample bundle, {days} days of BTCUSDT+ETHUSDT 1m: {k['bars']} bars in {wall:.0f} s = "
          f"{k['bars'] / cpu:,.0f} bars per CPU s ({k['trades']} trades, dead letters {k['dead_letters']}, "
          f"funding {k['funding_usdt']} USDT)")
    print(f"peak RSS: {rss:,.0f} MB (before the run, data written: {rss0:,.0f} MB); budget 500 MB: "
          f"{'within' if rss <= 500 else 'EXCEEDED'}")


def run_chimera(bundle_path: Path, data: list[str], frm: str | None = None, to: str | None = None,
                profile: bool = False):
    from chimera.backtest.service import backtest

    prof = cProfile.Profile(time.process_time) if profile else None
    t, c = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    result = backtest(str(bundle_path), data, frm, to)
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
        print(buf.getvalue())
    return result, wall, cpu


def run_backtesting_py(rows: list) -> tuple[list, float, int]:
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        n1, n2 = 20, 60

        def init(self):
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self):
            if crossover(self.sma1, self.sma2):
                self.position.close()
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.position.close()
                self.sell()

    df = pd.DataFrame(rows, columns=["t", "Open", "High", "Low", "Close", "Volume"])
    df.index = pd.to_datetime(df.pop("t"), unit="ms")
    t, c = time.perf_counter(), time.process_time()
    stats = Backtest(df, SmaCross, cash=100_000_000, commission=0.0005, finalize_trades=True).run()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    trades = [(int(r.EntryBar), int(r.ExitBar), "LONG" if r.Size > 0 else "SHORT") for r in stats._trades.itertuples()]
    return trades, wall, cpu, len(df)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--sample-days", type=int, default=1, help="days of the sample bundle run (2 symbols)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--year", action="store_true", help="only the memory run over a year of two symbols")
    ap.add_argument("--days", type=int, default=365, help="with --year: how many days")
    args = ap.parse_args()
    if args.year:
        return main_year(args.days)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        data, rows = write_data(tmp, args.copies)
        bundle = tmp / "sma.json"
        bundle.write_text(json.dumps(SMA_BUNDLE))
        t0 = rows[0][0]

        result, wall, cpu = run_chimera(bundle, [f"ft_klines:futures:BTCUSDT:{data}"], profile=args.profile)
        bars = result.run["kpis"]["bars"]
        ours = as_bars(result.summary.trades, t0)
        theirs, bt_wall, bt_cpu, bt_bars = run_backtesting_py(rows)
        sample, s_wall, s_cpu = run_chimera(REPO / "chimera" / "bundles" / "sample_vol_breakout.json", ["sample"],
                                     "2025-07-06", f"2025-07-{6 + args.sample_days:02d}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    same = ours == theirs
    first_diff = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    # CPU seconds too: on the shared machine the wall clock mostly measures the other processes.
    print(f"chimera backtest, SMA(20/60) bundle: {bars} bars in {wall:.1f} s = {bars / wall:,.0f} bars/s; "
          f"{cpu:.1f} CPU s = {bars / cpu:,.0f} bars per CPU s ({len(ours)} trades, dead letters "
          f"{result.run['kpis']['dead_letters']})")
    print(f"backtesting.py {__import__('backtesting').__version__} SmaCross: {bt_bars} bars in {bt_wall:.2f} s = "
          f"{bt_bars / bt_wall:,.0f} bars/s; {bt_cpu:.2f} CPU s = {bt_bars / bt_cpu:,.0f} bars per CPU s "
          f"({len(theirs)} trades)")
    print(f"ratio chimera / backtesting.py: {(bars / wall) / (bt_bars / bt_wall):.4f}x wall, "
          f"{(bars / cpu) / (bt_bars / bt_cpu):.4f}x CPU (target >= 1x)")
    print(f"trades identical (entry bar, exit bar, side): {same}"
          + ("" if same else f"; first difference at #{first_diff}: chimera {ours[first_diff:first_diff + 1]} "
                             f"vs backtesting.py {theirs[first_diff:first_diff + 1]}" if first_diff is not None
             else f"; chimera {len(ours)} vs backtesting.py {len(theirs)} trades"))
    sb = sample.run["kpis"]["bars"]
    print(f"chimera backtest, sample bundle (BTC+ETH, {args.sample_days} day): {sb} bars in {s_wall:.1f} s = "
          f"{sb / s_wall:,.0f} bars/s; {sb / s_cpu:,.0f} bars per CPU s ({sample.run['kpis']['trades']} trades)")
    print(f"peak RSS: {rss_mb:,.0f} MB")


if __name__ == "__main__":
    main()
