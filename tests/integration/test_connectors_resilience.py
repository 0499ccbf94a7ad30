"""S1 survives the venue failing while it connects: refused WebSocket connects at start are retried with
backoff (status DISCONNECTED + last_error meanwhile) and data flows afterwards; a rejected API key stops
S1 with the fix. Stream status is kept per account and market (the gateway shows every market). The
user-data de-duplication set is a time window that is trimmed, not an ever-growing set."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from decimal import Decimal

import pytest
from litestar.testing import TestClient

from chimera.errors import FatalError
from chimera.feeds.role import StatusBoard, run
from chimera.feeds.user_data import UserDataConnector
from chimera.schemas.envelope import decode
from chimera.schemas.messages import VenueReport
from chimera.streams import keys
from chimera.venues.binance.adapter import FuturesTrading
from chimera.workers.clock import ManualClock
from tests.support.gateway import bearer, gateway_app
from tests.support.local_venue import running_venue
from tests.support.polling import wait_until

SYMS = ("BTCUSDT", "ETHUSDT")
ALL_STREAMS = ("perp", "spot", "user_fut", "user_spot")


@pytest.fixture
def venue(tmp_path):
    with running_venue(tmp_path) as v:
        yield v


def s1_settings(settings, venue, tmp_path, api_key: str | None = None, user_data: bool = True):
    key, secret = venue.keys["main"]
    (tmp_path / "accounts.json").write_text(json.dumps({"accounts": [
        {"account_id": "main", "api_key": api_key or key, "api_secret": secret}]}))
    return replace(settings, symbols=SYMS, venue_url=venue.base_url, accounts_file=str(tmp_path / "accounts.json"),
                   extra={"spot_symbols": ["BTCUSDT"], "user_data": user_data})


def status(r, market: str) -> bytes | None:
    return r.hget(keys.s1_stream_status_market("main", market), "ws_status")


def status_events(r) -> list:
    return [e.payload for e in (decode(f) for _, f in r.xrange(keys.OPS_EVENTS)) if e.type == "account_stream_status"]


@pytest.mark.parametrize("user_data", [True, False], ids=["user-and-market", "market-only"])
def test_refused_websocket_connects_at_start_are_retried_and_data_flows(venue, r, settings, tmp_path, user_data):
    # With user data its streams connect first and their retries take every refusal; without it the perp
    # and the spot market-data connects are the ones refused.
    streams = ALL_STREAMS if user_data else ("perp", "spot")
    refused = 3 if user_data else 2
    venue.control("/chimera/v1/faults", {"refuse_ws_connects": refused})
    settings = s1_settings(settings, venue, tmp_path, user_data=user_data)
    stop = threading.Event()
    failure: list[BaseException] = []

    def s1() -> None:
        try:
            run(settings, stop)
        except BaseException as exc:  # the thread must not die: recorded to fail the test with the cause
            failure.append(exc)
            raise

    t = threading.Thread(target=s1, daemon=True)
    t.start()
    try:
        wait_until(lambda: all(status(r, m) == b"CONNECTED" for m in streams) or not t.is_alive(), timeout=60,
                   message="every stream of main connected")
        assert t.is_alive(), failure
        assert venue.control("/chimera/v1/faults")["injected"]["ws_connect_refused"] == refused
        down = [e for e in status_events(r) if e.ws_status == "DISCONNECTED"]
        assert len(down) >= refused and all("failed" in e.last_error for e in down), down
        if user_data:  # FUT connects first; SPOT's connect may come while FUT is still being refused
            assert "user_fut" in {e.market for e in down} <= {"user_fut", "user_spot"}
        else:
            assert {e.market for e in down} == {"perp", "spot"}
        assert r.hget(keys.s1_stream_status("main"), "ws_status") == b"CONNECTED"
        # Market data and user data are delivered after the failed connects.
        venue.advance(events=400)  # prices for the market order below
        wait_until(lambda: r.xlen(keys.mkt_stream("perp", "BTCUSDT")) > 0, timeout=20, message="perp data flows")
        wait_until(lambda: any(c.market == "spot" and "btcusdt@bookTicker" in c.subs for c in venue.server.hub.conns),
                   timeout=20, message="spot streams subscribed")  # the sample replay has perp data only
        if not user_data:
            return
        key, secret = venue.keys["main"]
        FuturesTrading(venue.base_url, key, secret).new_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                              qty=Decimal("0.010"), client_id="after-refusal")
        wait_until(lambda: any(decode(f).payload.client_order_id == "after-refusal" and decode(f).payload.exec_type
                               == "TRADE" for _, f in r.xrange(keys.VENUE_REPORTS)), timeout=20,
                   message="the fill reported over the user-data stream")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive() and not failure
    assert all(status(r, m) == b"DISCONNECTED" for m in streams)


def test_rejected_api_key_stops_s1_with_the_fix(venue, r, settings, tmp_path):
    settings = s1_settings(settings, venue, tmp_path, api_key="not-a-key")
    with pytest.raises(FatalError, match="rejected the API key.*accounts file"):
        run(settings, threading.Event())


def test_status_is_kept_per_market_and_the_gateway_shows_every_market(r, settings):
    board = StatusBoard(r, ManualClock(1_000))
    board.set("main", "CONNECTED", market="perp")
    board.set("main", "DISCONNECTED", "connect failed: 503", market="spot")
    assert status(r, "perp") == b"CONNECTED" and status(r, "spot") == b"DISCONNECTED"
    account = {k.decode(): v.decode() for k, v in r.hgetall(keys.s1_stream_status("main")).items()}
    assert account["ws_status"] == "DISCONNECTED" and account["last_error"] == "spot: connect failed: 503"
    with TestClient(gateway_app(settings, r)[0]) as client:
        client.headers.update(bearer(client, "viewer"))  # the gateway authenticates every caller (#15)
        main = {a["account_id"]: a for a in client.get("/accounts").json()["items"]}["main"]
        assert main["ws_status"] == "DISCONNECTED" and main["last_connected_at"] == 1_000
        assert main["markets"] == {
            "perp": {"ws_status": "CONNECTED", "last_error": "", "last_connected_at": 1_000},
            "spot": {"ws_status": "DISCONNECTED", "last_error": "connect failed: 503", "last_connected_at": 0}}
        board.set("main", "CONNECTED", market="spot")
        main = {a["account_id"]: a for a in client.get("/accounts").json()["items"]}["main"]
        assert main["ws_status"] == "CONNECTED" and main["last_error"] == ""
        assert {m: v["ws_status"] for m, v in main["markets"].items()} == {"perp": "CONNECTED", "spot": "CONNECTED"}
    events = [(e.market, e.ws_status) for e in status_events(r)]
    assert events == [("perp", "CONNECTED"), ("spot", "DISCONNECTED"), ("spot", "CONNECTED")]


def report(order_id: str, trade_id: int, symbol: str = "BTCUSDT") -> VenueReport:
    return VenueReport(market="FUT", symbol=symbol, client_order_id=f"c{order_id}", venue_order_id=order_id,
                       side="BUY", order_type="MARKET", exec_type="TRADE", order_status="FILLED", qty=Decimal("1"),
                       price=Decimal("0"), cum_qty=Decimal("1"), last_qty=Decimal("1"), last_price=Decimal("100"),
                       trade_id=trade_id, ts=1)


def test_report_dedupe_holds_within_the_window_and_the_set_is_trimmed(r, settings):
    clock = ManualClock(10_000_000)
    window_ms = 60_000
    conn = UserDataConnector(r=r, clock=clock, store=None, ws_url="ws://unused", rest=None, account_id="main",
                             seen_window_ms=window_ms)
    assert conn.publish(report("1", 11))
    clock.advance(window_ms - 1)
    assert not conn.publish(report("1", 11)), "a duplicate inside the window must be dropped"
    assert conn.publish(report("1", 11, symbol="ETHUSDT")), "order ids are per symbol: another symbol's report"
    for i in range(2, 50):  # a steady flow of new fills
        clock.advance(5_000)
        assert conn.publish(report(str(i), 100 + i))
    members = r.zrange(keys.s1_seen_window("main"), 0, -1, withscores=True)
    assert min(score for _, score in members) >= clock.now_ms() - window_ms
    assert len(members) == window_ms // 5_000 + 1  # only the last minute of fills is remembered
    assert b"FUT:BTCUSDT:1:t:11" not in {m for m, _ in members}
    assert [decode(f).payload.trade_id for _, f in r.xrange(keys.VENUE_REPORTS)][:3] == [11, 11, 102]
