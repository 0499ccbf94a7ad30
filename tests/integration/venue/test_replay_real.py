"""Replays of real Binance data: funding settlement and full ledger reconciliation, limit fills on
recorded trades. Expected values are recomputed here from the data files themselves."""

from __future__ import annotations

import gzip
import json
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import pytest

from chimera.venues.local.replay.feed import SAMPLE_DIR, sample_specs
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue

from .conftest import WS_2023, D, futures

T0 = 1751760000000  # 2025-07-06 00:00 UTC, first 1m bar of the in-repo sample
T1 = T0 + 3 * 86_400_000 + 1_800_000


def q8(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)


def _frame(name: str) -> pd.DataFrame:
    df = pd.read_feather(SAMPLE_DIR / name)
    df["ms"] = df["date"].astype("int64") // 1_000_000
    return df


@pytest.fixture
def sample_venue(tmp_path):
    v = start_venue(VenueConfig(data=sample_specs(), state_file=str(tmp_path / "state.json")))
    yield v
    v.stop()


def test_funding_fees_and_ledger_reconcile_on_real_klines(sample_venue):
    fut = futures(sample_venue)
    start_wallet = D(fut.futures_account_balance_v3().data()[0].balance)
    sample_venue.advance(to_ms=T0 + 30_000)
    positions = {"BTCUSDT": ("BUY", D("0.01")), "ETHUSDT": ("SELL", D("0.1"))}
    for sym, (side, qty) in positions.items():
        # ETH rallied ~9% over these days: at the default 20x the short would be liquidated.
        fut.change_initial_leverage(symbol=sym, leverage=3)
        fut.new_order(symbol=sym, side=side, type="MARKET", quantity=float(qty))
    opened_at = sample_venue.control("/chimera/v1/clock")["time_ms"]
    sample_venue.advance(to_ms=T1)

    expected_funding = Decimal(0)
    for coin, sym in (("BTC", "BTCUSDT"), ("ETH", "ETHUSDT")):
        side, qty = positions[sym]
        amt = qty if side == "BUY" else -qty
        rates = _frame(f"{coin}_USDT_USDT-8h-funding_rate.feather")
        bars = _frame(f"{coin}_USDT_USDT-1m-futures.feather").set_index("ms")
        settled = rates[(rates.ms > opened_at) & (rates.ms <= T1)]
        assert len(settled) == 9
        for ms, rate in zip(settled.ms, settled.open, strict=True):
            # At a settlement the latest replayed price is the open of that minute's bar.
            mark = Decimal(repr(float(bars.loc[(ms // 60_000) * 60_000, "open"])))
            expected_funding += q8(-amt * mark * Decimal(repr(float(rate))))
    income = fut.get_income_history(income_type="FUNDING_FEE", limit=1000).data()
    assert len(income) == 18
    assert sum(D(i.income) for i in income) == expected_funding

    for sym, (side, qty) in positions.items():
        fut.new_order(symbol=sym, side="SELL" if side == "BUY" else "BUY", type="MARKET", quantity=float(qty),
                      reduce_only="true")
    realized = fees = Decimal(0)
    for sym, (side, qty) in positions.items():
        trades = fut.account_trade_list(symbol=sym).data()
        assert len(trades) == 2
        entry, exit_ = D(trades[0].price), D(trades[1].price)
        direction = 1 if side == "BUY" else -1
        realized += q8((exit_ - entry) * qty * direction)
        fees += sum(q8(D(t.price) * D(t.qty) * D("0.0005")) for t in trades)
    end_wallet = D(fut.futures_account_balance_v3().data()[0].balance)
    assert end_wallet == start_wallet + realized - fees + expected_funding
    all_income = fut.get_income_history(limit=1000).data()
    assert sum(D(i.income) for i in all_income) == end_wallet - start_wallet
    assert fut.position_information_v3().data() == []


def test_klines_endpoint_never_leaks_the_future(sample_venue):
    sample_venue.advance(to_ms=T0 + 10 * 60_000 + 5_000)
    fut = futures(sample_venue)
    rows = fut.kline_candlestick_data(symbol="BTCUSDT", interval="1m", limit=5).data()
    assert rows[-1][0] == T0 + 10 * 60_000
    bars = _frame("BTC_USDT_USDT-1m-futures.feather").set_index("ms")
    assert D(rows[-2][4]) == Decimal(repr(float(bars.loc[T0 + 9 * 60_000, "close"])))
    assert D(rows[-1][4]) == Decimal(repr(float(bars.loc[T0 + 10 * 60_000, "open"])))


def _recorded_sells(mode: str, limit: Decimal) -> list[int]:
    """Times at which the recording shows sellers at or through `limit` (trades or best ask).

    Times follow the documented rule: exchange T (else E), forced non-decreasing in file order.
    """
    out, last = [], 0
    with gzip.open(WS_2023, "rt") as fh:
        for line in fh:
            msg = json.loads(line.split(" ", 1)[1])
            data, stream = msg.get("data", msg), msg.get("stream", "")
            t = data.get("E") if "@markPrice" in stream else (data.get("T") or data.get("E"))
            last = max(int(t or 0), last)
            if stream.endswith("@trade"):
                px = Decimal(data["p"])
            elif stream.endswith("@bookTicker"):
                px = Decimal(data["a"])
            else:
                continue
            if px < limit or (mode == "touch" and px == limit):
                out.append(last)
    return out


@pytest.mark.parametrize("mode", ["through", "touch"])
def test_limit_fill_time_matches_the_recorded_trades(tmp_path, mode):
    from chimera.venues.local.replay import DataSpec

    v = start_venue(VenueConfig(data=[DataSpec("ws", WS_2023, "futures", "BTCUSDT")], fill_mode=mode,
                                state_file=str(tmp_path / "s.json")))
    try:
        v.advance(events=300)
        fut = futures(v)
        placed_at = v.control("/chimera/v1/clock")["time_ms"]
        last = D(fut.symbol_price_ticker_v2(symbol="BTCUSDT").data().actual_instance.price)
        limit = last - D("3.0")
        o = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                          price=float(limit)).data()
        v.advance(events=10**9)
        hit = [t for t in _recorded_sells(mode, limit) if t > placed_at]
        got = fut.query_order(symbol="BTCUSDT", order_id=o.order_id).data()
        assert hit, "the recording trades below the limit within its 8 minutes"
        assert got.status == "FILLED" and got.update_time == hit[0] and D(got.avg_price) == limit
    finally:
        v.stop()


def test_paced_replay_tracks_speed_and_the_clock_endpoint(sample_venue):
    import time

    from tests.support.polling import wait_until

    start = sample_venue.control("/chimera/v1/replay", {"speed": 600})
    t0 = time.monotonic()
    clock = wait_until(lambda: (c := sample_venue.control("/chimera/v1/clock"))["time_ms"] >= start["time_ms"] + 300_000
                     and c)
    elapsed = time.monotonic() - t0
    # 300 s of market time at 600x is due after 0.5 s of wall time, not before.
    assert elapsed >= 0.45 and clock["speed"] == 600 and not clock["done"]
    sample_venue.control("/chimera/v1/replay", {"speed": 0})
