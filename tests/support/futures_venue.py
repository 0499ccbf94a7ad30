"""The local venue replaying the real 2023-04-04 BTCUSDT USDT-M recording, and an SDK client on it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from chimera.venues.binance.adapter import FuturesTrading
from chimera.venues.local.replay import DataSpec
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from tests.support.market_data import market_data

WS_2023 = str(market_data("ws_streams_depth_trades_bookticker", "usdm", "btcusdt_20230404.dat.gz"))


@contextlib.contextmanager
def btc_futures_venue(tmp_path, **limits) -> Iterator:
    """Paused replay with order limits no test reaches; ``limits`` override VenueConfig fields."""
    limits = {"orders_per_10s": 10_000, "orders_per_minute": 100_000} | limits
    v = start_venue(VenueConfig(data=[DataSpec("ws", WS_2023, "futures", "BTCUSDT")],
                                state_file=str(tmp_path / "venue.json"), **limits))
    try:
        v.advance(events=3000)  # a real book, trades and mark price before the first order
        yield v
    finally:
        v.stop()


def fut(venue) -> FuturesTrading:
    key, secret = venue.keys["main"]
    return FuturesTrading(venue.base_url, key, secret)
