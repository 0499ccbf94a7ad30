"""Trade lists to compare engines (issue 12 items 3 and 6): the in-process backtest's round trips as
plain tuples, and the same in backtesting.py's terms (entry bar, exit bar, side).

Conventions (``docs/backtest.md``): S3 decides on bar i at its signal time, bar i+1's open, before bar i+1's
first trade, so a MARKET order fills at bar i's close (± the synthetic half spread) stamped in bar i+1:
the bar backtesting.py fills it in (at bar i+1's open). A trade still open at the end is valued at the last
bar's close (``finalize_trades``).
"""

from __future__ import annotations

from collections.abc import Iterable

from chimera.backtest.results import Trade

BAR_MS = 60_000
# backtesting.py's SmaCross as a bundle: S2's sma_20/sma_60, S3's crossings, reverse on the opposite signal,
# one MARKET entry at a time; stop and take-profit 200 ATR away (only the crossovers move positions, as in
# SmaCross, and both stay positive prices), no regime block (SmaCross trades in every regime).
SMA_CROSS_BUNDLE = {
    "bundle_id": "sma_cross_20_60",
    "features": {"sma_windows": [20, 60]},
    "positions": {"tick_ms": 60000},
    "strategy": {
        "symbols": ["BTCUSDT"],
        "entry": {"long_when": "sma_20 crosses_above sma_60", "short_when": "sma_20 crosses_below sma_60"},
        "reverse": True,
        "trading_windows": [{"days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "24:00"}],
        "funding": {"no_entry_minutes_before": 0},
        "regime": {"block": []},
        "risk": {"fut_margin_budget_usdt": "1000", "max_per_symbol": 1, "max_open_positions": 1},
        "protections": {"cooldown_bars_after_sl": 0, "bar_ms": 60000},
        "sizing": {"market": "FUT", "leverage": 5, "margin_type": "ISOLATED", "margin_usdt": "100",
                   "exec_policy": "MARKET", "tp_atr": 200.0, "sl_atr": 200.0},
    },
}


def trade_rows(trades: Iterable[Trade]) -> list[tuple[str, str, int, int, str]]:
    """(symbol, side, entry time, exit time, status) of each round trip, in order."""
    return [(t.symbol, t.side, t.entry_time, t.exit_time, t.status) for t in trades]


def as_bars(trades: Iterable[Trade], first_open_ms: int, bar_ms: int = BAR_MS) -> list[tuple[int, int, str]]:
    """(entry bar, exit bar, LONG|SHORT) with bar 0 opening at ``first_open_ms``: backtesting.py's
    ``EntryBar``/``ExitBar`` of ``stats._trades``."""
    return [((t.entry_time - first_open_ms) // bar_ms, (t.exit_time - first_open_ms) // bar_ms, t.side) for t in trades]


def inprocess_trades(bundle_path: str, data: list[str], from_text: str | None = None,
                     to_text: str | None = None) -> list[tuple[str, str, int, int, str]]:
    """The in-process backtest's trade list for (bundle, data, period): what a Redis replay must reproduce."""
    from chimera.backtest.service import backtest

    return trade_rows(backtest(bundle_path, data, from_text, to_text).summary.trades)
