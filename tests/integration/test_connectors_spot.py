"""S1 spot market streams over the official spot SDK against the local venue: the real 2024-08-08 spot
recordings (bookTicker, trades, diff depth) and the real Binance Vision spot 1m klines of
2020-01-01 become events on ``mkt:events:{spot}:<SYM>``; the spot order book equals the recording's;
a WebSocket drop is repaired from the spot REST klines."""

from __future__ import annotations

import gzip
import json

import pytest

from chimera.feeds.market import MarketDataConnector
from chimera.schemas.envelope import decode
from chimera.streams import keys
from chimera.venues.binance.market_data import fetch_klines, spot_rest
from chimera.venues.local.replay import DataSpec
from chimera.workers.clock import WallClock
from tests.integration.test_connectors_depth import assert_same_book, recording, venue_depth_id
from tests.support.local_venue import running_venue
from tests.support.market_data import market_data
from tests.support.ops_events import ops_events
from tests.support.polling import wait_until

SYMS = ("BTCUSDT", "ETHUSDT")
VISION_1M = str(market_data("binance_vision", "spot", "daily", "klines", "BTCUSDT", "1m", "BTCUSDT-1m-2020-01-01.zip"))


def spot_events(r, sym: str) -> list:
    return [decode(f) for _, f in r.xrange(keys.mkt_stream("spot", sym))]


def spot_connector(v, r, symbols) -> MarketDataConnector:
    conn = MarketDataConnector(r=r, clock=WallClock(), ws_url=v.spot_ws_url, rest=spot_rest(v.base_url),
                               symbols=list(symbols), market="spot", depth_levels=20, reconnect_delay_ms=200)
    conn.start()
    wait_until(lambda: any(c.subs and c.market == "spot" for c in v.server.hub.conns), timeout=20,
               message="spot SDK subscribed")
    return conn


@pytest.fixture
def recorded_venue():
    with running_venue(data=[DataSpec("ws", str(recording(s, "spot")), "spot", s) for s in SYMS]) as v:
        yield v


def test_spot_book_ticker_trades_and_depth_from_the_recording(recorded_venue, r):
    v = recorded_venue
    start = int(v.control("/chimera/v1/clock")["time_ms"])
    v.advance(to_ms=start + 2_000)  # past both recorded snapshots
    conn = spot_connector(v, r, SYMS)
    try:
        v.advance(to_ms=start + 30_000)

        def caught_up():
            return all(conn.depth.books[s].loaded and conn.depth.books[s].last_id == venue_depth_id(v, s, "spot")
                       for s in SYMS)

        wait_until(caught_up, timeout=30, message="spot books at the venue's update id")
        for sym in SYMS:
            assert_same_book(conn, sym, "spot")
        # Every recorded trade after the subscription, in order, normalized as spot.
        recorded = []
        with gzip.open(recording("BTCUSDT", "spot"), "rt") as fh:
            for line in fh:
                msg = json.loads(line.partition(" ")[2])
                if msg.get("stream", "").endswith("@trade") and start + 2_000 < msg["data"]["T"] <= start + 30_000:
                    recorded.append(msg["data"])
        got = spot_events(r, "BTCUSDT")
        trades = [e.payload for e in got if e.type == "trade"]
        assert [t.trade_id for t in trades] == [d["t"] for d in recorded]
        assert all(t.market == "spot" and str(t.price) == d["p"] for t, d in zip(trades, recorded, strict=True))
        books = [e.payload for e in got if e.type == "book_ticker"]
        depth = [e.payload for e in got if e.type == "depth"]
        assert books and all(b.market == "spot" and b.bid < b.ask for b in books)
        assert depth and all(d.market == "spot" and len(d.bids) == 20 for d in depth)
        assert not r.exists(keys.mkt_stream("perp", "BTCUSDT"))
    finally:
        conn.stop()


@pytest.fixture
def kline_venue():
    with running_venue(data=[DataSpec("vision_klines", VISION_1M, "spot", "BTCUSDT")]) as v:
        yield v


def test_spot_klines_with_a_drop_repaired_from_spot_rest(kline_venue, r):
    v = kline_venue
    start = int(v.control("/chimera/v1/clock")["time_ms"]) + 1
    conn = spot_connector(v, r, ["BTCUSDT"])
    try:
        v.advance(to_ms=start + 10 * 60_000)
        wait_until(lambda: sum(e.type == "kline" for e in spot_events(r, "BTCUSDT")) >= 9, timeout=20,
                   message="spot bars")
        v.control("/chimera/v1/faults", {"drop_ws_now": True})
        v.advance(to_ms=start + 15 * 60_000)  # five bars close while S1 is down
        wait_until(lambda: ops_events(r, "WS_RECONNECT"), timeout=30, message="reconnected")
        wait_until(lambda: any(c.subs and c.market == "spot" for c in v.server.hub.conns), timeout=20,
                   message="resubscribed")
        v.advance(to_ms=start + 30 * 60_000 + 1)
        wait_until(lambda: sum(e.type == "kline" for e in spot_events(r, "BTCUSDT")) >= 30, timeout=30,
                   message="30 spot bars")
    finally:
        conn.stop()
    bars = [e.payload for e in spot_events(r, "BTCUSDT") if e.type == "kline"]
    rest = fetch_klines(spot_rest(v.base_url), "BTCUSDT", start, start + 30 * 60_000, market="spot")
    assert len(rest) == 30
    assert [(k.open_time, k.open, k.high, k.low, k.close, k.volume) for k in bars] == \
        [(k.open_time, k.open, k.high, k.low, k.close, k.volume) for k in rest]
    assert all(k.market == "spot" and k.closed for k in bars)
    assert any(k.backfilled for k in bars) and ops_events(r, "DATA_GAP") and ops_events(r, "BACKFILL_DONE")
    assert all(d.detail["missing"] == "0" for d in ops_events(r, "BACKFILL_DONE"))
    assert not r.exists(keys.mkt_bars("BTCUSDT"))  # spot bars stay out of the perp bar store (rho)
