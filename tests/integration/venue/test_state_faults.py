"""Durable state across a restart, and injected faults (5xx, 429, lost replies, WS drops)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from binance_common.errors import NetworkError, ServerError, TooManyRequestsError

from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue

from .conftest import D, book, futures, inject, mark, spot, trade, wallet


def test_state_survives_a_restart(tmp_path):
    path = str(tmp_path / "venue-state.json")
    v = start_venue(VenueConfig(data=[], state_file=path))
    try:
        inject(v, book("BTCUSDT", "30000.0", "30000.1"), trade("BTCUSDT", "30000.0"), mark("BTCUSDT", "30000"))
        fut = futures(v)
        fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.2)
        resting = fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                                price=29000, new_client_order_id="keep-me").data()
        wallet(v).user_universal_transfer(type="MAIN_UMFUTURE", asset="USDT", amount=500)
        key = fut.start_user_data_stream().data().listen_key
        before_bal = fut.futures_account_balance_v3().data()[0].balance
        before_spot = {b.asset: b.free for b in spot(v).get_account().data().balances}
    finally:
        v.stop()
    v2 = start_venue(VenueConfig(data=[], state_file=path))
    try:
        fut = futures(v2)
        got = fut.query_order(symbol="BTCUSDT", orig_client_order_id="keep-me").data()
        assert got.status == "NEW" and got.order_id == resting.order_id
        pos = fut.position_information_v3(symbol="BTCUSDT").data()[0]
        assert D(pos.position_amt) == D("0.2") and D(pos.entry_price) == D("30000.1")
        assert fut.futures_account_balance_v3().data()[0].balance == before_bal
        assert {b.asset: b.free for b in spot(v2).get_account().data().balances} == before_spot
        assert fut.keepalive_user_data_stream().data().listen_key == key
        # The resting order still matches after the restart, and ids keep counting up.
        inject(v2, trade("BTCUSDT", "28999.9"))
        assert fut.query_order(symbol="BTCUSDT", order_id=resting.order_id).data().status == "FILLED"
        new = fut.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.21).data()
        assert new.order_id > resting.order_id
    finally:
        v2.stop()


def test_5xx_share_surfaces_as_server_error(bare_venue):
    bare_venue.control("/chimera/v1/faults", {"error_5xx_share": 1.0})
    with pytest.raises(ServerError):
        futures(bare_venue, retries=0).futures_account_balance_v3()
    bare_venue.control("/chimera/v1/faults", {"error_5xx_share": 0.0})
    assert futures(bare_venue, retries=0).futures_account_balance_v3().data()


def test_429_share_carries_retry_after(bare_venue):
    bare_venue.control("/chimera/v1/faults", {"error_429_share": 1.0})
    with pytest.raises(TooManyRequestsError) as err:
        futures(bare_venue).futures_account_balance_v3()
    assert err.value.status_code == -1003 and err.value.retry_after == 1


def test_partial_5xx_share_is_reproducible_with_a_seed(bare_venue):
    def run() -> list[bool]:
        bare_venue.control("/chimera/v1/faults", {"error_5xx_share": 0.5, "seed": 42})
        out = []
        for _ in range(20):
            try:
                futures(bare_venue, retries=0).futures_account_balance_v3()
                out.append(True)
            except ServerError:
                out.append(False)
        return out

    first, second = run(), run()
    assert first == second and 0 < sum(first) < 20


def test_lost_reply_order_exists_although_the_client_errored(bare_venue):
    inject(bare_venue, book("BTCUSDT", "30000.0", "30000.1"), trade("BTCUSDT", "30000.0"))
    fut = futures(bare_venue, retries=0)
    bare_venue.control("/chimera/v1/faults", {"lost_reply_share": 1.0})
    with pytest.raises(NetworkError):
        fut.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01,
                      price=29000, new_client_order_id="lost-1")
    bare_venue.control("/chimera/v1/faults", {"lost_reply_share": 0.0})
    got = fut.query_order(symbol="BTCUSDT", orig_client_order_id="lost-1").data()
    assert got.status == "NEW" and D(got.price) == D("29000")


def test_drop_websockets_now(bare_venue):
    async def scenario() -> str:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"{bare_venue.ws_url}/ws/btcusdt@trade")
            await asyncio.get_event_loop().run_in_executor(
                None, bare_venue.control, "/chimera/v1/faults", {"drop_ws_now": True})
            msg = await asyncio.wait_for(ws.receive(), 5)
            return msg.type.name

    assert asyncio.run(scenario()) in ("CLOSE", "CLOSED", "CLOSING")
