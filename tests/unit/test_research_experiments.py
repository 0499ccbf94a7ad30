"""Statistical honesty of the experiment pipeline on real data (the shipped BTC/ETH 1m sample, 15-minute
periods): families of random-signal strategies are confirmed at most 5% of the time; a planted edge is
confirmed; DSR counts the real number of trials."""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chimera.research.experiment import Hypothesis, run_family
from chimera.research.strategies import BarStrategies
from chimera.research.walkforward import walk_forward

DATA = Path(__file__).resolve().parents[2] / "chimera" / "venues" / "local" / "data"
H12 = 12 * 3_600_000
DAY = 86_400_000
PERIODS = 365 * 96  # 15-minute periods a year
FAMILIES = 100
PER_FAMILY = 5


def bars(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_feather(DATA / f"{symbol}_USDT_USDT-1m-futures.feather")
    q = df.set_index("date").close.resample("15min").last().dropna()
    return (q.index.astype("int64") // 1_000_000).to_numpy(), q.to_numpy()


def folds(times):
    return walk_forward(int(times[0]), int(times[-1]), train_ms=2 * DAY, test_ms=DAY, horizon_ms=H12)


def family(i: int) -> int:
    """How many hypotheses of random-signal family ``i`` the pipeline confirms (real BTC or ETH bars)."""
    times, closes = bars("BTC" if i % 2 == 0 else "ETH")
    ev = BarStrategies(times, closes, "random", salt=i)
    flat = BarStrategies(times, closes, "flat")
    hyps = [Hypothesis(f"f{i}h{j}", f"f{i}", {"seed": [3 * j, 3 * j + 1, 3 * j + 2]}) for j in range(PER_FAMILY)]
    res = run_family(hyps, ev, flat, folds(times), periods=PERIODS, seed=1000 * i)
    return sum(r.verdict == "CONFIRMED" for r in res)


def test_random_signal_families_are_confirmed_at_most_five_percent_of_the_time():
    with ProcessPoolExecutor(2) as pool:
        confirmed = list(pool.map(family, range(FAMILIES)))
    rate = sum(1 for c in confirmed if c) / FAMILIES
    print(f"null check: {sum(1 for c in confirmed if c)}/{FAMILIES} families with a confirmation "
          f"({rate:.1%}); {sum(confirmed)} of {FAMILIES * PER_FAMILY} hypotheses")
    assert rate <= 0.05


def test_a_planted_edge_is_confirmed_and_the_noise_is_not():
    rng = np.random.default_rng(42)
    n = 7 * 96
    times = np.arange(n, dtype=np.int64) * 900_000
    signal = rng.choice([-1.0, 1.0], size=n)
    rets = 0.002 * signal + rng.normal(0, 0.01, n)  # returns[t] follow the signal known at t
    closes = 100 * np.concatenate([[1.0], np.cumprod(1 + rets[:-1])])
    planted = BarStrategies(times, closes, "signal", signal=signal)
    noise = BarStrategies(times, closes, "random", salt=7)
    flat = BarStrategies(times, closes, "flat")
    fs = folds(times)
    hyps = [Hypothesis("edge", "planted", {"scale": [0.5, 1.0, 2.0]})]
    res = run_family(hyps, planted, flat, fs, periods=PERIODS)
    assert res[0].verdict == "CONFIRMED", res[0].reasons
    assert res[0].trials == 3 * len(fs) and res[0].psr > 0.95 and res[0].dsr <= res[0].psr
    noise_res = run_family([Hypothesis("n", "planted", {"seed": [1, 2, 3]})], noise, flat, fs, periods=PERIODS)
    assert noise_res[0].verdict == "REJECTED"


def test_untestable_hypothesis_has_nan_p_and_does_not_poison_the_family():
    times, closes = bars("BTC")
    flat = BarStrategies(times, closes, "flat")
    res = run_family([Hypothesis("same", "x", {"k": [0]}), Hypothesis("m", "x", {"lookback": [4, 16]})],
                     _Mixed(times, closes), flat, folds(times), periods=PERIODS)
    assert math.isnan(res[0].spa_p) and math.isnan(res[0].q) and res[0].verdict == "REJECTED"
    assert not math.isnan(res[1].q)


class _Mixed:
    """Hypothesis "same" trades nothing (identical to the flat incumbent); "m" is a momentum rule."""

    def __init__(self, times, closes):
        self.flat = BarStrategies(times, closes, "flat")
        self.mom = BarStrategies(times, closes, "momentum")

    def __call__(self, params, start, end):
        return self.mom(params, start, end) if "lookback" in params else self.flat(params, start, end)


@pytest.mark.parametrize("processes", [2])
def test_parallel_processes_give_the_same_result(processes):
    times, closes = bars("ETH")
    ev = BarStrategies(times, closes, "momentum", cost=0.0005)
    flat = BarStrategies(times, closes, "flat")
    hyps = [Hypothesis(f"m{k}", "mom", {"lookback": [k, 2 * k]}) for k in (2, 4, 8)]
    a = run_family(hyps, ev, flat, folds(times), periods=PERIODS)
    b = run_family(hyps, ev, flat, folds(times), periods=PERIODS, processes=processes)
    assert [(r.spa_p, r.q, r.verdict, r.chosen) for r in a] == [(r.spa_p, r.q, r.verdict, r.chosen) for r in b]
