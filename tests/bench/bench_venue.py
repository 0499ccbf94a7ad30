"""Benchmark the local venue: orders/s through the official SDK, and replay events/s.

Run as a script (not collected by pytest): `python tests/bench/bench_venue.py`.
"""

from __future__ import annotations

import time


def main() -> None:
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationRestAPI,
        DerivativesTradingUsdsFutures,
    )

    from chimera.venues.local.engine import Engine, ExchangeInfo
    from chimera.venues.local.replay import build_feed
    from chimera.venues.local.replay.clock import ReplayClock
    from chimera.venues.local.replay.feed import sample_specs
    from chimera.venues.local.server.app import VenueConfig, load_accounts
    from chimera.venues.local.testing import start_venue

    # 1. Pure engine replay throughput (what the in-process backtest runtime gets).
    t = time.perf_counter()
    feed = build_feed(sample_specs())
    load_s = time.perf_counter() - t
    clock = ReplayClock(speed=0)
    engine = Engine(ExchangeInfo.load(), clock, load_accounts(None))
    t = time.perf_counter()
    n = 0
    while feed.peek() is not None:
        ev = feed.pop()
        clock.time_ms = ev.time
        engine.on_market(ev)
        n += 1
    dt = time.perf_counter() - t
    print(f"engine replay: {n} events in {dt:.2f}s = {n / dt:,.0f} events/s (load {load_s:.2f}s)")

    # 2. Server replay throughput with the HTTP/WS layer in the loop (advance in one request).
    v = start_venue(VenueConfig(weight_per_minute=10**9, orders_per_10s=10**9, orders_per_minute=10**9))
    try:
        t = time.perf_counter()
        clk = v.advance(events=50_000)
        dt = time.perf_counter() - t
        print(f"server replay: {clk['processed']} events in {dt:.2f}s = {clk['processed'] / dt:,.0f} events/s")

        key, secret = v.keys["main"]
        api = DerivativesTradingUsdsFutures(config_rest_api=ConfigurationRestAPI(
            api_key=key, api_secret=secret, base_path=v.base_url)).rest_api
        n_orders = 300
        t = time.perf_counter()
        for i in range(n_orders):
            api.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.001,
                          price=50000 + (i % 50) / 10)
        dt = time.perf_counter() - t
        baseline = n_orders / dt
        print(f"SDK new_order (resting LIMIT, state file off): {n_orders} in {dt:.2f}s = {baseline:,.0f} orders/s")
        t = time.perf_counter()
        for _ in range(100):
            api.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.001)
            api.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.001)
        dt = time.perf_counter() - t
        print(f"SDK MARKET round trips: 200 orders in {dt:.2f}s = {200 / dt:,.0f} orders/s")
    finally:
        v.stop()

    # 3. Same SDK path with the durable state file on (atomic write after each mutating request).
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        v = start_venue(VenueConfig(state_file=f"{tmp}/state.json", weight_per_minute=10**9,
                                    orders_per_10s=10**9, orders_per_minute=10**9))
        try:
            v.advance(events=1000)
            key, secret = v.keys["main"]
            api = DerivativesTradingUsdsFutures(config_rest_api=ConfigurationRestAPI(
                api_key=key, api_secret=secret, base_path=v.base_url)).rest_api
            t = time.perf_counter()
            for i in range(200):
                api.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.001,
                              price=50000 + (i % 50) / 10)
            dt = time.perf_counter() - t
            print(f"SDK new_order with state file: 200 in {dt:.2f}s = {200 / dt:,.0f} orders/s "
                  f"({200 / dt / baseline:.2f}x the state-file-off baseline)")
        finally:
            v.stop()


if __name__ == "__main__":
    main()
