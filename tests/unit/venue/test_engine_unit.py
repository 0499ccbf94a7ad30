"""Engine and loader units: intrabar path, timestamp units, liquidation formula, filters."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from chimera.venues.local.engine import ExchangeInfo, VenueError
from chimera.venues.local.engine.futures import bankruptcy_price, liquidation_price
from chimera.venues.local.engine.model import Position
from chimera.venues.local.loaders import kline_path, load_vision_klines, to_ms
from tests.support.market_data import market_data

VISION = str(market_data("binance_vision", "spot", "daily", "klines", "BTCUSDT"))


def test_intrabar_path_up_bar_goes_high_first_and_down_bar_low_first():
    up = (0, D(10), D(12), D(9), D(11), D(4))
    down = (0, D(10), D(12), D(9), D(9.5), D(4))
    assert [p for _, p in kline_path(up, 60_000)] == [10, 12, 9, 11]
    assert [p for _, p in kline_path(down, 60_000)] == [10, 9, 12, D(9.5)]
    assert [t for t, _ in kline_path(up, 60_000)] == [0, 20_000, 40_000, 59_999]


def test_vision_ms_and_us_timestamps_normalise_to_ms():
    ms_rows = load_vision_klines(f"{VISION}/1m/BTCUSDT-1m-2020-01-01.zip")
    us_rows = load_vision_klines(f"{VISION}/1h/BTCUSDT-1h-2026-05-08.zip")
    assert ms_rows[0][0] == 1577836800000  # 2020-01-01 00:00 UTC
    assert us_rows[0][0] == 1778198400000  # 2026-05-08 00:00 UTC, stored as µs in the archive
    assert to_ms(1680652700423575) == 1680652700423 and to_ms(1723161255000000000) == 1723161255000


def test_liquidation_and_bankruptcy_prices():
    pos = Position(symbol="BTCUSDT", amt=D("0.1"), entry_price=D("30000"), isolated_margin=D("150"))
    assert liquidation_price(pos, D("0.025")) == (D("3000") - D("150")) / (D("0.1") * D("0.975"))
    assert bankruptcy_price(pos) == D("28500")
    short = Position(symbol="BTCUSDT", amt=D("-0.1"), entry_price=D("30000"), isolated_margin=D("150"))
    assert liquidation_price(short, D("0.025")) == (D("150") + D("3000")) / (D("0.1") * D("1.025"))
    assert bankruptcy_price(short) == D("31500")


def test_filters_come_from_the_real_snapshot():
    info = ExchangeInfo.load()
    btc = info.get("futures", "BTCUSDT")
    assert (btc.tick, btc.step, btc.min_notional) == (D("0.10"), D("0.001"), D("10"))
    with pytest.raises(VenueError) as err:
        info.get("futures", "DOGEUSDT")
    assert err.value.code == -1121
    spot = info.get("spot", "ETHUSDT")
    assert spot.notional_filter == "MIN_NOTIONAL" and spot.step == D("0.0001")
