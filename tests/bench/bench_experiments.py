"""Experiment trials per second: walk-forward trials (one parameter set scored on one fold's training
window) of momentum hypotheses on the shipped BTC sample at 15-minute periods, SPA included, in 1 and 2
processes. Run: ``python tests/bench/bench_experiments.py``."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from chimera.research.experiment import Hypothesis, run_family
from chimera.research.strategies import BarStrategies
from chimera.research.walkforward import walk_forward

DATA = Path(__file__).resolve().parents[2] / "chimera" / "venues" / "local" / "data"


def main() -> None:
    df = pd.read_feather(DATA / "BTC_USDT_USDT-1m-futures.feather")
    q = df.set_index("date").close.resample("15min").last().dropna()
    times, closes = (q.index.astype("int64") // 1_000_000).to_numpy(), q.to_numpy()
    folds = walk_forward(int(times[0]), int(times[-1]), train_ms=2 * 86_400_000, test_ms=86_400_000,
                         horizon_ms=12 * 3_600_000)
    ev = BarStrategies(times, closes, "momentum", cost=0.0005)
    flat = BarStrategies(times, closes, "flat")
    hyps = [Hypothesis(f"m{k}", "bench", {"lookback": list(range(k, k + 40))}) for k in range(2, 18, 2)]
    for processes in (1, 2):
        t = time.perf_counter()
        res = run_family(hyps, ev, flat, folds, periods=365 * 96, processes=processes)
        dt = time.perf_counter() - t
        trials = sum(r.trials for r in res)
        print(f"{processes} process(es): {trials} trials, {len(hyps)} hypotheses, {len(folds)} folds in {dt:.2f}s "
              f"= {trials / dt:.0f} trials/s")


if __name__ == "__main__":
    main()
