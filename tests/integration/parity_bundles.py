"""Test bundles for the chain parity test: entries that fire on the shipped data (any expanding
15-minute volatility, long only), small stops so they fill within the window, a trailing ladder in
ROE fractions the July 2025 minutes reach at 20x. TEST ONLY; never trade with them."""

from __future__ import annotations

import copy

SKIP = 0  # first minute of the shipped klines used
MINUTES = 90

_BASE = {
    "label": "PARITY TEST ONLY",
    "strategy": {
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "entry": {"long_when": "rv_15 > 0"},
        "rules": [],
        "trading_windows": [{"days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "24:00"}],
        "health": {"size_mult": {"GREEN": 1.0, "YELLOW": 1.0, "ORANGE": 1.0}, "when_missing": "GREEN"},
        "regime": {"block": []},
        "risk": {"fut_margin_budget_usdt": "1000", "max_per_symbol": 1, "max_open_positions": 4},
        "protections": {"cooldown_bars_after_sl": 0, "bar_ms": 60000, "priority_replace": False},
        "sizing": {"market": "FUT", "leverage": 20, "margin_type": "ISOLATED", "margin_usdt": "20",
                   "exec_policy": "MakerThenTaker", "tp_atr": 30.0, "sl_atr": 1.0},
    },
    # A check every 5 s of the 20 s window (not every 250 ms): each timer is a step of the parity driver.
    "router": {"maker_wait_ms": 20_000, "maker_poll_ms": 5_000, "twap_slices": 3, "twap_interval_ms": 10_000},
    "positions": {"trailing_enabled": True, "trailing_steps": [[0.01, 0.002], [0.03, 0.01]], "tick_ms": 0},
}


def _bundle(bundle_id: str, exec_policy: str) -> dict:
    b = copy.deepcopy(_BASE)
    b["bundle_id"] = bundle_id
    b["strategy"]["sizing"]["exec_policy"] = exec_policy
    return b


# scenario -> (bundle, what must have happened at least this often on both runtimes)
BUNDLES = {
    "maker_then_taker": (_bundle("parity_maker_taker", "MakerThenTaker"),
                         {"maker_legs": 1, "taker_legs": 1, "stops": 2, "stop_moves": 1, "stop_fills": 1}),
    "twap": (_bundle("parity_twap", "TWAP"), {"twap_legs": 3, "stops": 1}),
}
