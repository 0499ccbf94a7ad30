"""S1 user data against the local venue over the official futures SDK's user-data stream: orders placed
at the venue come back as VenueReports in order (duplicates dropped by trade id), and the real 8h funding
settlements of the repo's replay become funding_records whose sum equals the venue's FUNDING_FEE income."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chimera.handlers.connectors.user_data import FUNDING_RECORDS, UserDataConnector
from chimera.schemas.envelope import decode
from chimera.store import open_store
from chimera.streams import keys
from chimera.venues.binance.adapter import FuturesTrading
from chimera.venues.binance.market_data import futures_rest
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from chimera.workers.clock import WallClock
from tests.support.polling import wait_until

ACCOUNT = "sub1"
EIGHT_H = 8 * 3600 * 1000


@pytest.fixture
def venue(tmp_path):
    v = start_venue(VenueConfig(state_file=str(tmp_path / "venue.json")))
    v.advance(events=50)  # a price before the first order
    yield v
    v.stop()


class Recording(UserDataConnector):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.frames: list[dict] = []

    def process(self, d: dict) -> None:
        self.frames.append(d)
        super().process(d)


@pytest.fixture
def conn(r, settings, venue):
    key, secret = venue.keys[ACCOUNT]
    c = Recording(r=r, clock=WallClock(), store=open_store(settings.store_url), ws_url=venue.ws_url,
                  rest=futures_rest(venue.base_url, key, secret), account_id=ACCOUNT, keepalive_s=0.3)
    c.start()
    wait_until(lambda: any(c.listen_key in x.subs for x in venue.server.hub.conns), timeout=20,
               message="SDK subscribed to the listenKey")
    yield c
    c.stop()


def reports(r) -> list:
    return [decode(f) for _, f in r.xrange(keys.VENUE_REPORTS)]


def test_orders_become_venue_reports_in_order_without_duplicates(r, venue, conn):
    key, secret = venue.keys[ACCOUNT]
    fut = FuturesTrading(venue.base_url, key, secret)
    mid = fut.book("BTCUSDT").mid
    far = (mid * Decimal("0.8")).quantize(Decimal("0.1"))
    fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", qty=Decimal("0.010"), client_id="ud-lmt", price=far,
                  tif="GTC")
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=Decimal("0.010"), client_id="ud-mkt")
    fut.cancel("BTCUSDT", "ud-lmt")
    got = wait_until(lambda: (lambda x: x if len(x) >= 4 else None)(reports(r)), timeout=20,
                     message="four venue reports")
    seq = [(e.payload.client_order_id, e.payload.exec_type, e.payload.order_status) for e in got]
    assert seq == [("ud-lmt", "NEW", "NEW"), ("ud-mkt", "NEW", "NEW"), ("ud-mkt", "TRADE", "FILLED"),
                   ("ud-lmt", "CANCELED", "CANCELED")]
    assert all(e.account_id == ACCOUNT for e in got)
    fill = got[2].payload
    venue_order = fut.query("BTCUSDT", "ud-mkt")
    [trade] = fut.trades("BTCUSDT", venue_order.venue_order_id)
    assert fill.market == "FUT" and fill.symbol == "BTCUSDT" and fill.side == "BUY" and fill.order_type == "MARKET"
    assert fill.venue_order_id == str(venue_order.venue_order_id)
    assert str(fill.trade_id) == str(trade["id"])
    assert fill.last_qty == fill.cum_qty == Decimal("0.010") and fill.last_price == Decimal(str(trade["price"]))
    assert fill.commission == Decimal(str(trade["commission"])) and fill.commission_asset == "USDT"
    assert not fill.is_maker and fill.ts > 0
    assert got[2].idempotency_key == f"vr:{ACCOUNT}:{fill.venue_order_id}:t:{fill.trade_id}"
    # The same frame again (a reconnect replay, a redelivered push): dropped by its trade id.
    frame = next(d for d in conn.frames if d.get("e") == "ORDER_TRADE_UPDATE" and d["o"]["x"] == "TRADE")
    conn.process(frame)
    assert conn.duplicates == 1 and len(reports(r)) == 4
    # Keep-alive runs on its period (0.3 s here, 30 min in production) and the key stays valid.
    wait_until(lambda: conn.keepalives >= 2, timeout=10, message="listenKey keep-alives")
    assert conn.listen_key in venue.server.listen_keys


def test_funding_settlement_during_replay_writes_funding_records(r, venue, conn, settings):
    key, secret = venue.keys[ACCOUNT]
    fut = FuturesTrading(venue.base_url, key, secret)
    fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=Decimal("0.010"), client_id="fund-long")
    now = int(venue.control("/chimera/v1/clock")["time_ms"])
    first = (now // EIGHT_H + 1) * EIGHT_H
    venue.advance(to_ms=first + 2 * EIGHT_H + 60_000)  # three real settlements of the replayed data
    income = [x.to_dict() for x in futures_rest(venue.base_url, key, secret)
              .get_income_history(income_type="FUNDING_FEE", limit=1000).data()]
    assert len(income) == 3
    store = open_store(settings.store_url)
    wait_until(lambda: store.count(FUNDING_RECORDS, {"account": ACCOUNT}) == 3, timeout=30,
               message="three funding records")
    docs = sorted(store.query(FUNDING_RECORDS, {"account": ACCOUNT}), key=lambda d: d["funding_time"])
    assert sum(Decimal(d["amount_usdt"]) for d in docs) == sum(Decimal(x["income"]) for x in income)
    assert [d["funding_time"] for d in docs] == sorted(int(x["time"]) for x in income)
    assert all(d["symbol"] == "BTCUSDT" and d["account"] == ACCOUNT for d in docs)
    ledger = {int(x["time"]): Decimal(x["rate"]) for x in
              venue.control(f"/chimera/v1/ledger?account={ACCOUNT}").get("funding", [])}
    for d in docs:
        if d["rate"] is not None and d["funding_time"] in ledger:
            assert Decimal(d["rate"]) == ledger[d["funding_time"]]
    # A second FUNDING_FEE push (or a restart) does not write anything twice.
    assert conn.sync_funding(docs[-1]["funding_time"]) == 0
