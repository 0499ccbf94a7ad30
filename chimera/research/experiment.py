"""One hypothesis family through walk-forward, with honest statistics (pure: inputs are functions).

Per hypothesis: on each fold, every parameter set of the grid is scored on the (purged) training window
and the best by Sharpe is scored on the test window; the test windows' returns form the out-of-sample
series. Then, against the incumbent's out-of-sample returns:

- Hansen's SPA test (``arch``; losses = −returns, the incumbent as benchmark) gives the p-value;
- PSR and DSR of the out-of-sample series, DSR with the **real number of trials** of the family (every
  parameter set tried on every fold of every hypothesis) and the variance of Sharpe across those trials;
- Benjamini–Hochberg across the family's SPA p-values (a NaN p-value is left out, never poisons the rest).

Verdict: CONFIRMED when BH rejects at ``alpha`` (q ≤ alpha), the DSR is at least ``min_dsr`` (0.95: the
out-of-sample Sharpe survives the family's selection bias) and the out-of-sample mean beats the incumbent;
REJECTED otherwise, with the reasons. The SPA p-value alone was measured anti-conservative on the sample
(9 of 100 random-signal families confirmed with 3 folds of 15-minute periods), hence the DSR gate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from chimera.research import metrics
from chimera.research.walkforward import Fold

Evaluate = Callable[[dict, int, int], np.ndarray]  # (params, start_ms, end_ms) -> per-period net returns


@dataclass(frozen=True)
class Hypothesis:
    hypothesis_id: str
    family: str
    grid: dict[str, list]  # parameter -> values tried
    metric: str = "sharpe"
    direction: str = "greater"  # the variant should beat the incumbent


@dataclass
class HypothesisResult:
    hypothesis_id: str
    trials: int
    chosen: list[dict]
    kpis: dict
    fold_kpis: list[dict]
    train_sharpes: list[float]
    spa_p: float = math.nan
    psr: float = math.nan
    dsr: float = math.nan
    q: float = math.nan
    verdict: str = "REJECTED"
    reasons: list[str] = field(default_factory=list)


def grid_of(h: Hypothesis) -> list[dict]:
    names = sorted(h.grid)
    return [dict(zip(names, vals, strict=True)) for vals in itertools.product(*(h.grid[n] for n in names))]


def kpis(r: np.ndarray, periods: int) -> dict:
    r = np.asarray(r, dtype=float)
    wins, losses = r[r > 0].sum(), -r[r < 0].sum()
    return {"n": int(r.size), "net_return": float(np.prod(1 + r) - 1) if r.size else 0.0,
            "sharpe": metrics.sharpe(r, periods), "sortino": metrics.sortino(r, periods),
            "max_drawdown": metrics.max_drawdown(r) if r.size else math.nan,
            "hit_rate": float((r > 0).mean()) if r.size else math.nan,
            "profit_factor": float(wins / losses) if losses > 0 else math.nan}


def walk(h: Hypothesis, evaluate: Evaluate, folds: Sequence[Fold], periods: int) -> tuple[HypothesisResult, np.ndarray]:
    grid = grid_of(h)
    chosen, fold_kpis, train_sr, oos = [], [], [], []
    for f in folds:
        scored = []
        for params in grid:
            tr = evaluate(params, f.train_start, f.train_end)
            sr = metrics.sharpe(tr, 1)  # per-period: what DSR's variance needs
            train_sr.append(sr)
            scored.append((-np.inf if math.isnan(sr) else sr, params))
        best = max(scored, key=lambda s: s[0])[1]
        te = np.asarray(evaluate(best, f.test_start, f.test_end), dtype=float)
        chosen.append(best)
        fold_kpis.append({"fold": f.n, **kpis(te, periods)})
        oos.append(te)
    series = np.concatenate(oos) if oos else np.array([])
    res = HypothesisResult(h.hypothesis_id, trials=len(grid) * len(folds), chosen=chosen, kpis=kpis(series, periods),
                           fold_kpis=fold_kpis, train_sharpes=train_sr)
    return res, series


def spa_pvalue(candidate: np.ndarray, incumbent: np.ndarray, reps: int, seed: int) -> float:
    from arch.bootstrap import SPA

    if candidate.size < 10 or np.all(candidate == incumbent):
        return math.nan
    spa = SPA(-incumbent, -candidate[:, None], reps=reps, block_size=None, seed=seed)
    spa.compute()
    return float(spa.pvalues["consistent"])


def _one(args) -> tuple[HypothesisResult, np.ndarray]:
    h, evaluate, folds, periods = args
    return walk(h, evaluate, folds, periods)


def run_family(hypotheses: Sequence[Hypothesis], evaluate: Evaluate, incumbent: Evaluate, folds: Sequence[Fold], *,
               periods: int, alpha: float = 0.05, reps: int = 300, seed: int = 0, processes: int = 1,
               min_dsr: float = 0.95) -> list[HypothesisResult]:
    """``processes`` > 1 runs the hypotheses' walk-forwards in parallel processes (``evaluate`` must pickle)."""
    work = [(h, evaluate, folds, periods) for h in hypotheses]
    if processes > 1 and len(work) > 1:
        with ProcessPoolExecutor(processes) as pool:
            walked = list(pool.map(_one, work))
    else:
        walked = [_one(w) for w in work]
    bench = np.concatenate([np.asarray(incumbent({}, f.test_start, f.test_end), dtype=float) for f in folds])
    return finalize(walked, bench, alpha=alpha, reps=reps, seed=seed, min_dsr=min_dsr)


def finalize(walked: Sequence[tuple[HypothesisResult, np.ndarray]], bench: np.ndarray, *, alpha: float = 0.05,
             reps: int = 300, seed: int = 0, min_dsr: float = 0.95) -> list[HypothesisResult]:
    """The family's statistics once every hypothesis has walked (in one process, several, or several workers)."""
    n_trials = sum(r.trials for r, _ in walked)
    all_sr = [s for r, _ in walked for s in r.train_sharpes if not math.isnan(s)]
    var_sr = float(np.var(all_sr, ddof=1)) if len(all_sr) > 1 else 0.0
    for i, (r, series) in enumerate(walked):
        r.spa_p = spa_pvalue(series, bench, reps, seed + i) if series.size == bench.size else math.nan
        r.psr = metrics.psr(series)
        r.dsr = metrics.dsr(series, n_trials, var_sr)
    rejected, q = metrics.benjamini_hochberg([r.spa_p for r, _ in walked], alpha)
    out = []
    for (r, series), rej, qv in zip(walked, rejected, q, strict=True):
        r.q = qv
        beats = series.size > 0 and float(series.mean()) > float(bench.mean())
        if math.isnan(r.spa_p):
            r.reasons.append("not testable (too few out-of-sample periods or identical to the incumbent)")
        elif not rej:
            r.reasons.append(f"BH q={qv:.4f} > alpha={alpha}")
        if not beats:
            r.reasons.append("out-of-sample mean does not beat the incumbent")
        deflated = not math.isnan(r.dsr) and r.dsr >= min_dsr
        if not deflated:
            r.reasons.append(f"DSR={r.dsr:.3f} < {min_dsr} over {n_trials} trials")
        r.verdict = "CONFIRMED" if rej and beats and deflated else "REJECTED"
        if r.verdict == "CONFIRMED":
            r.reasons.append(f"SPA p={r.spa_p:.4f}, BH q={qv:.4f} <= {alpha}; DSR={r.dsr:.3f} over {n_trials} trials")
        out.append(r)
    return out
