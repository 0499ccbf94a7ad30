"""S1 depth against the local venue replaying the real 2024-08-08 USDT-M recordings of BTC and ETH
(REST snapshot + diff depth) over the official futures SDK: the book S1 keeps equals the book
rebuilt here from the recording, level by level; a dropped diff is detected and S1 resyncs; S2's
depth features come from the published levels."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from chimera.feeds.market import MarketDataConnector
from chimera.handlers.features.engine import FeatureEngine
from chimera.handlers.features.role import SPEC
from chimera.schemas.envelope import decode
from chimera.streams import keys
from chimera.venues.binance.market_data import futures_rest
from chimera.venues.local.replay import DataSpec
from chimera.workers.clock import WallClock
from tests.support.local_venue import running_venue
from tests.support.ops_events import ops_events
from tests.support.order_books import RECORDINGS, best, rebuilt_book
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

SYMS = ("BTCUSDT", "ETHUSDT")
COMPARED_LEVELS = 500  # of the 1,000 per side the REST snapshot gives


def recording(sym: str, market: str = "usdm"):
    return RECORDINGS / market / f"{sym.lower()}_20240808.gz"


def assert_same_book(conn: MarketDataConnector, sym: str, market: str = "usdm") -> None:
    book = conn.depth.books[sym]
    bids, asks = rebuilt_book(recording(sym, market), book.last_id)
    assert book.top(COMPARED_LEVELS) == (best(bids, COMPARED_LEVELS, True), best(asks, COMPARED_LEVELS, False))


@pytest.fixture
def venue():
    with running_venue(data=[DataSpec("ws", str(recording(s)), "futures", s) for s in SYMS]) as v:
        yield v


def venue_depth_id(v, sym: str, market: str = "futures") -> int:
    return v.call(lambda: v.server.engine.markets[market][sym].depth_id)


def depth_messages(r, sym: str) -> list:
    return [e for e in (decode(f) for _, f in r.xrange(keys.mkt_stream("perp", sym))) if e.type == "depth"]


def caught_up(conn, v) -> bool:
    return all(conn.depth.books[s].loaded and conn.depth.books[s].last_id == venue_depth_id(v, s) for s in SYMS)


def test_depth_book_equals_recording_resyncs_on_gap_and_feeds_s2(venue, r, settings):
    start = int(venue.control("/chimera/v1/clock")["time_ms"])
    venue.advance(to_ms=start + 3_000)  # past both recorded snapshots
    conn = MarketDataConnector(r=r, clock=WallClock(), ws_url=venue.ws_url, rest=futures_rest(venue.base_url),
                               symbols=list(SYMS), depth_levels=20, reconnect_delay_ms=200)
    conn.start()
    try:
        with ThreadWorker(SPEC, r, replace(settings, symbols=SYMS), "s2-depth"):
            wait_until(lambda: any(c.subs for c in venue.server.hub.conns), timeout=20, message="SDK subscribed")
            for step in range(1, 7):
                venue.advance(to_ms=start + 3_000 + step * 5_000)
            wait_until(lambda: caught_up(conn, venue), timeout=30, message="S1 books at the venue's update id")
            for sym in SYMS:
                assert_same_book(conn, sym)
            assert conn.depth.resyncs == 0

            # Published levels: the last DepthLevels of each symbol is the top 20 of the book at its id.
            for sym in SYMS:
                last = depth_messages(r, sym)[-1]
                bids, asks = rebuilt_book(recording(sym), int(last.idempotency_key.rsplit(":", 1)[1]))
                assert last.payload.bids == best(bids, 20, True) and last.payload.asks == best(asks, 20, False)

            # The venue withholds one diff: the next one does not follow, S1 resyncs from a new snapshot.
            venue.control("/chimera/v1/faults", {"drop_depth_diffs": 1})
            venue.advance(to_ms=start + 3_000 + 40_000)
            wait_until(lambda: conn.depth.resyncs >= 1 and caught_up(conn, venue), timeout=30,
                       message="resynced and caught up")
            resync = ops_events(r, "DEPTH_RESYNC")
            assert len(resync) == 1 and resync[0].detail["symbol"] in SYMS
            for sym in SYMS:
                assert_same_book(conn, sym)

            # S2's depth features come from S1's levels (top 10 notional and imbalance).
            for sym in SYMS:
                last = depth_messages(r, sym)[-1].payload

                def cached(sym=sym, last=last):
                    raw = r.get(keys.feat_cache(sym))
                    state = FeatureEngine.from_bytes(raw).state if raw else None
                    return state if state is not None and state.book_ts == last.ts else None

                state = wait_until(cached, timeout=20, message=f"S2 folded {sym}'s last levels in")
                bid = sum(float(p) * float(q) for p, q in last.bids[:10])
                ask = sum(float(p) * float(q) for p, q in last.asks[:10])
                assert state.depth_seen
                assert math.isclose(state.depth_bid, bid, rel_tol=1e-9)
                assert math.isclose(state.depth_ask, ask, rel_tol=1e-9)
                assert math.isclose(state.depth_imbalance, (bid - ask) / (bid + ask), rel_tol=1e-9, abs_tol=1e-12)
    finally:
        conn.stop()
