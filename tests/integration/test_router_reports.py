"""S4 reads venue:{reports}: an exchange-side stop that fires at the venue ends FILLED in ``orders`` with its
``fills`` document, without S4 sending anything. S1's real user-data connector for the account feeds the
reports; the local venue replays the real 2023-04-04 BTCUSDT recording and the mark price is driven through
the stop through the venue's replay path."""

from __future__ import annotations

from decimal import Decimal

from msgspec.structs import replace

from chimera.feeds.user_data import UserDataConnector
from chimera.handlers.router.role import SPEC as S4
from chimera.schemas.envelope import decode
from chimera.schemas.messages import OrderIntent
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import client_order_id
from chimera.venues.binance.market_data import futures_rest
from chimera.workers.clock import WallClock
from tests.integration.test_router_b1 import done, env, fut, submit, venue  # noqa: F401 - fixtures
from tests.support.polling import group_caught_up, wait_until
from tests.support.workers import ThreadWorker


def reports_for(r, cid: str) -> list:
    return [e.payload for e in (decode(f) for _, f in r.xrange(keys.VENUE_REPORTS)) if e.payload.client_order_id == cid]


def test_stop_that_fires_at_the_venue_ends_filled_with_a_fill_document(r, env, venue):  # noqa: F811
    s, store = env
    key, secret = venue.keys["main"]
    ud = UserDataConnector(r=r, clock=WallClock(), store=open_store(s.store_url), ws_url=venue.ws_url,
                           rest=futures_rest(venue.base_url, key, secret), account_id="main")
    ud.start()
    stop_cid = client_order_id("rf-1:sl", "sl")
    try:
        wait_until(lambda: any(ud.listen_key in c.subs for c in venue.server.hub.conns), timeout=20,
                   message="user data subscribed")
        with ThreadWorker(S4, r, s, "s4-a", store):
            submit(r, OrderIntent(intent_id="rf-1", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.010")))
            wait_until(lambda: done(store, "rf-1"), timeout=20, message="entry filled")
            sl = (fut(venue).book("BTCUSDT").mid * Decimal("0.995")).quantize(Decimal("0.1"))
            submit(r, OrderIntent(intent_id="rf-1:sl", market="FUT", symbol="BTCUSDT", side="SELL", qty=Decimal("0.010"),
                                  exec_policy="STOP", purpose="STOP", stop_price=sl, reduce_only=True))
            wait_until(lambda: (store.get("orders", "rf-1:sl:sl") or {}).get("status") == "ACCEPTED", timeout=20,
                       message="stop resting at the venue")
            venue.control("/chimera/v1/market", {"events": [
                {"market": "futures", "symbol": "BTCUSDT", "kind": "mark", "price": str(sl - Decimal("5"))}]})
            doc = wait_until(lambda: (d := store.get("orders", "rf-1:sl:sl")) and d["status"] == "FILLED" and d,
                             timeout=20, message="stop FILLED from the venue's report")
            [trade] = [x for x in reports_for(r, stop_cid) if x.exec_type == "TRADE"]
            # The same report again (another delivery key: past S1's and the runtime's de-duplication),
            # a stale NEW after the fill, and a status the table forbids after FILLED: all absorbed.
            prod = Producer(r, WallClock())
            prod.publish(keys.VENUE_REPORTS, trade, "again:trade")
            prod.publish(keys.VENUE_REPORTS, replace(trade, exec_type="NEW", order_status="NEW",
                                                                 trade_id=0, last_qty=Decimal(0)), "again:new")
            prod.publish(keys.VENUE_REPORTS, replace(trade, exec_type="REJECTED", order_status="REJECTED",
                                                                 trade_id=0, last_qty=Decimal(0)), "again:rejected")
            wait_until(lambda: group_caught_up(r, keys.VENUE_REPORTS, keys.group("s4")), timeout=20, message="replayed reports handled")
    finally:
        ud.stop()
    assert fut(venue).open_algo_orders("BTCUSDT") == []
    assert doc["filled_qty"] == "0.010" and Decimal(doc["avg_price"]) == trade.last_price
    fills = store.query("fills", {"client_order_id": stop_cid})
    assert len(fills) == 1
    f = fills[0]
    assert f["trade_id"] == str(trade.trade_id) and Decimal(f["qty"]) == Decimal("0.010")
    assert Decimal(f["price"]) == trade.last_price and f["intent_id"] == "rf-1:sl" and f["side"] == "SELL"
    assert Decimal(f["fee"]) == trade.commission and f["purpose"] == "STOP"
    final = store.get("orders", "rf-1:sl:sl")
    assert final["status"] == "FILLED" and final["filled_qty"] == "0.010"
    assert r.xlen(keys.DEAD_LETTER) == 0
    assert all(Decimal(p["positionAmt"]) == 0 for p in fut(venue).position_risk("BTCUSDT"))
