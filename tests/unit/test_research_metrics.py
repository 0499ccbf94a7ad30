"""Our research statistics against the reference implementations (empyrical-reloaded, quantstats,
statsmodels) on fixed fixtures, and the walk-forward purge/embargo by horizon."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from chimera.research import metrics
from chimera.research.walkforward import walk_forward

RNG = np.random.default_rng(7)
DAILY = RNG.normal(0.0008, 0.02, 400)
DAILY[17] = np.nan


def test_ratios_match_empyrical_with_365_days():
    empyrical = pytest.importorskip("empyrical")
    r = pd.Series(DAILY, index=pd.date_range("2024-01-01", periods=DAILY.size, freq="D")).dropna()
    assert metrics.sharpe(DAILY) == pytest.approx(empyrical.sharpe_ratio(r, annualization=365), rel=1e-12)
    assert metrics.sortino(DAILY) == pytest.approx(empyrical.sortino_ratio(r, annualization=365), rel=1e-12)
    assert metrics.max_drawdown(DAILY) == pytest.approx(empyrical.max_drawdown(r), rel=1e-12)
    assert metrics.annual_return(DAILY) == pytest.approx(empyrical.annual_return(r, annualization=365), rel=1e-12)


def test_sharpe_matches_quantstats_with_365_days():
    qs = pytest.importorskip("quantstats")
    r = pd.Series(DAILY, index=pd.date_range("2024-01-01", periods=DAILY.size, freq="D")).dropna()
    assert metrics.sharpe(DAILY) == pytest.approx(qs.stats.sharpe(r, periods=365), rel=1e-9)


def test_psr_and_dsr():
    # A per-period SR of 0.1 over 1000 normal observations: PSR = Φ(0.1·√999 / √(1 + 0.5·0.01)).
    r = np.array([0.1 + (1 if i % 2 else -1) for i in range(1000)])
    sr = r.mean() / r.std(ddof=1)
    from scipy import stats
    k = stats.kurtosis(r, fisher=False)
    want = stats.norm.cdf(sr * math.sqrt(999) / math.sqrt(1 - stats.skew(r) * sr + (k - 1) / 4 * sr**2))
    assert metrics.psr(r) == pytest.approx(want, rel=1e-12)
    assert metrics.dsr(r, n_trials=1, var_sr=0.01) == metrics.psr(r)
    # More trials raise the bar: the deflated figure falls.
    assert metrics.dsr(r, n_trials=100, var_sr=0.01) < metrics.dsr(r, n_trials=10, var_sr=0.01) < metrics.psr(r)


def test_benjamini_hochberg_matches_statsmodels_and_nan_does_not_poison():
    from statsmodels.stats.multitest import multipletests

    p = [0.001, 0.02, 0.03, 0.04, 0.2, 0.9]
    rej, q = metrics.benjamini_hochberg(p)
    want_rej, want_q, _, _ = multipletests(p, method="fdr_bh")
    assert rej == list(want_rej) and q == pytest.approx(list(want_q))
    rej2, q2 = metrics.benjamini_hochberg([*p[:3], math.nan, *p[3:]])
    assert math.isnan(q2[3]) and rej2[3] is False
    assert [x for i, x in enumerate(q2) if i != 3] == pytest.approx(list(want_q))
    assert metrics.benjamini_hochberg([math.nan, math.nan]) == ([False, False], [pytest.approx(math.nan, nan_ok=True)] * 2)


def test_walk_forward_purges_and_embargoes_by_horizon():
    H = 12 * 3600_000
    D = 86_400_000
    folds = walk_forward(0, 30 * D, train_ms=10 * D, test_ms=5 * D, horizon_ms=H)
    assert len(folds) >= 3
    for f in folds:
        assert f.train_end == f.test_start - H  # no training label reaches into the test window
    for a, b in zip(folds, folds[1:], strict=False):
        assert b.test_start >= a.test_end + H
    with pytest.raises(ValueError, match="must exceed the horizon"):
        walk_forward(0, D, train_ms=H, test_ms=H, horizon_ms=H)
