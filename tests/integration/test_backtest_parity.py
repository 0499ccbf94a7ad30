"""Parity with a peer engine (issue 12 item 6): an SMA(20/60) crossover bundle over the shipped BTCUSDT
1m USDT-M futures data gives the same trade list (entry bar, exit bar, side) in ``chimera backtest`` (the
real S2 → S3 → S4 → S6 handlers against the venue engine) as in backtesting.py 0.6.x's SmaCross with the
same commission and ``finalize_trades=True``.

backtesting.py computes its SMAs with pandas and fills at the next bar's open; Chimera computes them in S2
and its market entry fills when S1 publishes the closed bar, at the next bar's open (docs/backtest.md).
Nothing on the backtesting.py side is computed by Chimera: it reads the feather file itself.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from chimera.backtest.parity import SMA_CROSS_BUNDLE, as_bars
from chimera.backtest.service import backtest
from tests.support.market_data import market_data

backtesting = pytest.importorskip("backtesting")

PERIOD = ("2025-07-06", "2025-07-14")  # all of the shipped file: 10,718 bars, 202 round trips in SmaCross
TAKER = 0.0005  # the venue's futures taker fee (docs/fill_model.md): every fill here is a MARKET order


def peer_trades(path, frm: str, to: str) -> tuple[list[tuple[int, int, str]], int]:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(SMA, self.data.Close, 20)
            self.slow = self.I(SMA, self.data.Close, 60)

        def next(self):
            if crossover(self.fast, self.slow):
                self.position.close()
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()
                self.sell()

    df = pd.read_feather(path)
    df.index = df.pop("date")
    df = df[(df.index >= pd.Timestamp(frm, tz="UTC")) & (df.index < pd.Timestamp(to, tz="UTC"))]
    df = df.rename(columns=str.capitalize)
    stats = Backtest(df, SmaCross, cash=100_000_000, commission=TAKER, finalize_trades=True).run()
    trades = [(int(t.EntryBar), int(t.ExitBar), "LONG" if t.Size > 0 else "SHORT") for t in stats._trades.itertuples()]
    return trades, int(df.index[0].timestamp() * 1000)


def test_sma_crossover_trades_like_backtesting_py(tmp_path):
    path = market_data("futures_usdm_2025-06_07", "BTC_USDT_USDT-1m-futures.feather")
    bundle = tmp_path / "sma.json"
    bundle.write_text(json.dumps(SMA_CROSS_BUNDLE))
    result = backtest(str(bundle), [str(path)], *PERIOD)
    theirs, first_open = peer_trades(path, *PERIOD)

    assert result.run["fees"]["futures_taker"] == str(TAKER)  # the same commission on both sides
    ours = as_bars(result.summary.trades, first_open)
    assert len(theirs) >= 150
    assert ours == theirs, next((i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b) \
        if len(ours) == len(theirs) else (len(ours), len(theirs))
    # Every round trip but the last closed on the opposite signal; the last is valued at the end.
    reasons = [t.exit_reason for t in result.summary.trades]
    assert set(reasons[:-1]) == {"EXIT"} and reasons[-1] == "END_OF_DATA"
    checks = {c["id"]: c for c in result.run["checks"]}
    assert all(c["ok"] for c in checks.values()) and "store_identity" in checks, result.run["checks"]
    assert result.run["kpis"]["dead_letters"] == 0
