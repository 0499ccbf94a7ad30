"""B1 with the exchange-side stop firing at the venue: S4 + S6 workers, S1's user-data stream for the
account, the local venue replaying the real 2023-04-04 BTCUSDT recording. The mark price is driven
through the stop through the venue's replay path; S6 learns of the fill only from venue:{reports}."""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.risk.state import Limits, RedisState
from chimera.schemas.envelope import decode
from chimera.schemas.messages import OrderIntent
from chimera.streams import keys
from chimera.venues.binance.adapter import client_order_id
from tests.integration.test_router_b1 import env, fut, submit, venue  # noqa: F401 - fixtures
from tests.support.polling import wait_until
from tests.support.positions import pos_events, user_data
from tests.support.workers import ThreadWorker


def test_exchange_stop_fill_closes_the_position_and_releases_the_budget(r, env, venue):  # noqa: F811
    s, store = env
    budget = RedisState(r)
    budget.reserve("sf-1", "BTCUSDT", Decimal("15"), Limits(budget_usdt=Decimal("1000"), max_per_symbol=2, max_open=5))
    with user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        mid = fut(venue).book("BTCUSDT").mid
        sl = (mid * Decimal("0.995")).quantize(Decimal("0.1"))
        submit(r, OrderIntent(intent_id="sf-1", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.010"),
                              exec_policy="MARKET", purpose="ENTRY", sl_price=sl))
        wait_until(lambda: pos_events(r, "SL_ARMED"), timeout=20, message="stop armed")
        assert len(fut(venue).open_algo_orders("BTCUSDT")) == 1
        # Mark price through the stop, through the venue's replay path: the STOP_MARKET triggers
        # and its MARKET sell fills against the recorded book.
        venue.control("/chimera/v1/market", {"events": [
            {"market": "futures", "symbol": "BTCUSDT", "kind": "mark", "price": str(sl - Decimal("5"))}]})
        [exit_ev] = wait_until(lambda: pos_events(r, "EXIT"), timeout=20, message="EXIT from the venue fill")
    stop_cid = client_order_id("sf-1:sl1", "sl")
    fills = [e.payload for e in (decode(f) for _, f in r.xrange(keys.VENUE_REPORTS))
             if e.payload.client_order_id == stop_cid and e.payload.exec_type == "TRADE"]
    assert len(fills) == 1 and fills[0].order_status == "FILLED" and fills[0].reduce_only
    pos = store.get("positions", "sf-1")
    assert pos["state"] == "CLOSED" and pos["exit_intent_id"] == "sf-1:sl1"
    assert pos["closed_by"] == f"venue:TRADE:{stop_cid}" and pos["close_reason"] == "STOP_LOSS"
    assert Decimal(pos["exit_price"]) == fills[0].last_price
    assert exit_ev.exit_price == fills[0].last_price and exit_ev.symbol == "BTCUSDT"
    assert store.get("positions_snapshots", "sf-1:closed")["state"] == "CLOSED"
    assert all(Decimal(p["positionAmt"]) == 0 for p in fut(venue).position_risk("BTCUSDT"))
    assert fut(venue).open_algo_orders("BTCUSDT") == [] and fut(venue).open_orders("BTCUSDT") == []
    used = budget.usage("BTCUSDT")
    assert (used.in_use_usdt, used.per_symbol, used.open_positions) == (0, 0, 0)
    assert pos["stop"]["client_order_id"] == stop_cid and pos["qty"] == "0"
