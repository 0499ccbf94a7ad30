"""Return statistics. Crypto trades every day, so annualisation uses 365 periods a year for daily
returns (``periods`` = 365 × periods per day otherwise). Conventions follow empyrical (sample standard
deviation, ddof=1; Sortino's downside deviation as the root mean square of the negative returns), so
figures compare one to one (``tests/unit/test_research_metrics.py`` checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

DAYS = 365
EULER_GAMMA = 0.5772156649015329


def _arr(returns: Sequence[float]) -> np.ndarray:
    a = np.asarray(returns, dtype=float)
    return a[~np.isnan(a)]


def sharpe(returns: Sequence[float], periods: int = DAYS) -> float:
    a = _arr(returns)
    if a.size < 2:
        return math.nan
    sd = a.std(ddof=1)
    return math.nan if sd == 0 else float(a.mean() / sd * math.sqrt(periods))


def sortino(returns: Sequence[float], periods: int = DAYS) -> float:
    a = _arr(returns)
    if a.size < 2:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(a, 0.0) ** 2))) * math.sqrt(periods)
    return math.inf if downside == 0 else float(a.mean() * periods / downside)


def max_drawdown(returns: Sequence[float]) -> float:
    """Worst peak-to-trough fall of the compounded curve (a negative fraction, 0 when never below a peak)."""
    a = _arr(returns)
    if a.size == 0:
        return math.nan
    curve = np.concatenate([[1.0], np.cumprod(1.0 + a)])
    return float(np.min(curve / np.maximum.accumulate(curve) - 1.0))


def annual_return(returns: Sequence[float], periods: int = DAYS) -> float:
    a = _arr(returns)
    if a.size == 0:
        return math.nan
    total = float(np.prod(1.0 + a))
    return total ** (periods / a.size) - 1.0 if total > 0 else -1.0


def psr(returns: Sequence[float], sr_benchmark: float = 0.0) -> float:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012): P(true per-period SR > benchmark), from
    the per-period SR, its skew and (non-excess) kurtosis over n observations."""
    a = _arr(returns)
    n = a.size
    if n < 3 or a.std(ddof=1) == 0:
        return math.nan
    sr = a.mean() / a.std(ddof=1)
    skew = float(stats.skew(a))
    kurt = float(stats.kurtosis(a, fisher=False))
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if denom <= 0:
        return math.nan
    return float(stats.norm.cdf((sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(denom)))


def expected_max_sharpe(n_trials: int, var_sr: float) -> float:
    """E[max SR] of ``n_trials`` unskilled trials whose per-period SRs vary by ``var_sr`` (the DSR bar)."""
    if n_trials < 2 or not var_sr > 0:
        return 0.0
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(var_sr) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def dsr(returns: Sequence[float], n_trials: int, var_sr: float) -> float:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014): PSR against the best SR that ``n_trials``
    tries with that dispersion would show by luck alone."""
    return psr(returns, expected_max_sharpe(n_trials, var_sr))


def benjamini_hochberg(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[list[bool], list[float]]:
    """(rejected, q) per p-value. A NaN p-value (a hypothesis that could not be tested) is neither
    rejected nor counted in the family, and gets q = NaN; the others are corrected among themselves."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    ok = ~np.isnan(p)
    rejected = [False] * p.size
    q = [math.nan] * p.size
    if ok.any():
        rej, qv, _, _ = multipletests(p[ok], alpha=alpha, method="fdr_bh")
        for i, r, v in zip(np.flatnonzero(ok), rej, qv, strict=True):
            rejected[int(i)], q[int(i)] = bool(r), float(v)
    return rejected, q
