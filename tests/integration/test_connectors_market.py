"""S1 → Redis → S2 with the local venue replaying the repo's real BTC/ETH 1m klines over the
official futures SDK's WebSocket client: streamed features equal the recompute of the same
period, also when the venue drops the WebSocket mid-replay (reconnect, gap, REST backfill)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from chimera.feeds.market import MarketDataConnector
from chimera.handlers.features.recompute import recompute
from chimera.handlers.features.role import SPEC
from chimera.handlers.features.toolkit import is_bar_feature, signal_id
from chimera.schemas.envelope import decode
from chimera.store import open_store
from chimera.streams import keys
from chimera.venues.binance.market_data import fetch_klines, futures_rest
from chimera.workers.clock import ManualClock, WallClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context
from tests.support.local_venue import running_venue
from tests.support.ops_events import ops_events
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

SYMS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def venue(tmp_path):
    with running_venue(tmp_path) as v:
        yield v


def first_open(v) -> int:
    return int(v.control("/chimera/v1/clock")["time_ms"]) + 1


def assert_equal_to_recompute(v, store, settings, tmp_path, start: int, n: int) -> None:
    other = open_store(f"sqlite:///{tmp_path}/recompute.sqlite")
    ctx = Context(clock=ManualClock(start), store=other, config=ActiveConfig(),
                  settings=replace(settings, symbols=SYMS, venue_url=v.base_url))
    summary = recompute(ctx, "ETHUSDT", start, start + n * 60_000)  # klines from the venue's REST
    assert summary["signals_written"] == n
    for i in range(n):
        sid = signal_id("ETHUSDT", start + i * 60_000)
        a, b = store.get("signals", sid), other.get("signals", sid)
        assert a is not None, f"bar {i} never featured"
        # Klines carry no book or funding: the recompute reproduces the bar features.
        bar = [k for k in a["features"] if is_bar_feature(k)]
        assert {k: a["flags"].get(k) for k in bar} == {k: b["flags"].get(k) for k in bar}, i
        for name in bar:
            va, vb = a["features"][name], b["features"][name]
            assert (va is None and vb is None) or math.isclose(va, vb, rel_tol=1e-12, abs_tol=1e-15), (i, name, va, vb)


def run_s1_s2(v, r, settings, drop_at: int | None, n: int):
    start = first_open(v)
    settings = replace(settings, symbols=SYMS, venue_url=v.base_url)
    conn = MarketDataConnector(r=r, clock=WallClock(), ws_url=v.ws_url, rest=futures_rest(v.base_url),
                               symbols=list(SYMS), reconnect_delay_ms=200, metrics_every_s=0.5)
    conn.start()
    worker = ThreadWorker(SPEC, r, settings, "s2-main")
    try:
        with worker as w:
            wait_until(lambda: any(c.subs for c in v.server.hub.conns), timeout=20, message="SDK subscribed")
            step = 10
            minute = 0
            while minute < n:
                nxt = min(minute + step, n)
                if drop_at is not None and minute <= drop_at < nxt:
                    v.advance(to_ms=start + drop_at * 60_000)
                    wait_until(lambda: w.store.count("signals", {"symbol": "ETHUSDT"}) >= drop_at, timeout=30,
                               message="caught up before the drop")
                    v.control("/chimera/v1/faults", {"drop_ws_now": True})
                    v.advance(to_ms=start + (drop_at + 5) * 60_000)  # five bars go out while we are down
                    wait_until(lambda: ops_events(r, "WS_RECONNECT"), timeout=30, message="reconnected")
                    wait_until(lambda: any(c.subs for c in v.server.hub.conns), timeout=20, message="resubscribed")
                    nxt = max(nxt, drop_at + 5)
                v.advance(to_ms=start + nxt * 60_000)
                minute = nxt
            # The last bar closes at start + n*60000 - 1: advance a little past it.
            v.advance(to_ms=start + n * 60_000 + 1)
            wait_until(lambda: w.store.count("signals", {"symbol": "ETHUSDT"}) >= n, timeout=60,
                       message="every ETH bar featured")
            wait_until(lambda: r.xlen(keys.metrics_stream("s1.mkt_throughput")) >= 1, timeout=10,
                       message="a throughput metric")
            store = w.store
    finally:
        conn.stop()
    return start, store, settings, conn


def test_streamed_features_over_venue_equal_recompute(venue, r, settings, tmp_path):
    n = 90
    start, store, settings, conn = run_s1_s2(venue, r, settings, None, n)
    assert_equal_to_recompute(venue, store, settings, tmp_path, start, n)
    assert conn.gaps == 0 and not ops_events(r, "DATA_GAP")
    # Every event type made it, normalized, with mid/spread on book tickers where present.
    types = {e.type for e in (decode(f) for _, f in r.xrange(keys.mkt_stream("perp", "ETHUSDT"), count=5000))}
    assert {"kline", "trade", "mark_price"} <= types
    assert r.xlen(keys.metrics_stream("s1.mkt_throughput")) >= 1


def test_ws_drop_mid_replay_reconnects_backfills_same_features(venue, r, settings, tmp_path):
    n = 90
    start, store, settings, conn = run_s1_s2(venue, r, settings, 40, n)
    gaps, done = ops_events(r, "DATA_GAP"), ops_events(r, "BACKFILL_DONE")
    assert gaps and done and conn.backfilled >= 1
    assert all(d.detail["missing"] == "0" for d in done)
    backfilled = [e.payload for e in (decode(f) for _, f in r.xrange(keys.mkt_stream("perp", "ETHUSDT")))
                  if e.type == "kline" and e.payload.backfilled]
    assert backfilled and [k.open_time for k in backfilled] == sorted(k.open_time for k in backfilled)
    assert_equal_to_recompute(venue, store, settings, tmp_path, start, n)
    # The REST bars S1 backfilled are the venue's bars.
    rest = fetch_klines(futures_rest(venue.base_url), "ETHUSDT", backfilled[0].open_time, backfilled[-1].open_time + 1)
    assert [k.close for k in rest] == [k.close for k in backfilled]


def test_s1_role_skips_disabled_accounts_and_reports_stream_status(venue, r, settings, tmp_path):
    import json
    import threading

    from chimera.feeds.role import run
    from chimera.workers.registry import load_spec

    assert load_spec("s1") is run
    (tmp_path / "accounts.json").write_text(json.dumps({"accounts": [
        {"account_id": "main", "api_key": venue.keys["main"][0], "api_secret": venue.keys["main"][1]},
        {"account_id": "sub1", "api_key": venue.keys["sub1"][0], "api_secret": venue.keys["sub1"][1],
         "enabled": False}]}))
    settings = replace(settings, symbols=SYMS, venue_url=venue.base_url, accounts_file=str(tmp_path / "accounts.json"),
                       extra={"spot_symbols": ["btcusdt"]})
    stop = threading.Event()
    t = threading.Thread(target=run, args=(settings, stop), daemon=True)
    t.start()
    try:
        wait_until(lambda: r.hget(keys.s1_stream_status("main"), "ws_status") == b"CONNECTED", timeout=20,
                   message="main connected")
        assert r.hget(keys.s1_stream_status("sub1"), "ws_status") == b"DISABLED"
        statuses = [(e.account_id, e.payload.ws_status) for e in (decode(f) for _, f in r.xrange(keys.OPS_EVENTS))
                    if e.type == "account_stream_status"]
        assert ("sub1", "DISABLED") in statuses and ("main", "CONNECTED") in statuses
        venue.advance(to_ms=first_open(venue) + 3 * 60_000)
        wait_until(lambda: r.xlen(keys.mkt_stream("perp", "ETHUSDT")) > 0, timeout=20, message="market data flows")
        # Spot symbols get their own connection through the spot SDK, with depth.
        wait_until(lambda: any(c.market == "spot" and {"btcusdt@bookTicker", "btcusdt@depth@100ms"} <= c.subs
                               for c in venue.server.hub.conns), timeout=20, message="spot streams subscribed")
    finally:
        stop.set()
        t.join(20)
    assert not t.is_alive()
    assert r.hget(keys.s1_stream_status("main"), "ws_status") == b"DISCONNECTED"
