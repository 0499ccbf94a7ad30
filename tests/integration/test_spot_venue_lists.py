"""The local venue's order-list reads (``GET /api/v3/openOrderList``, ``/api/v3/allOrderList``) through the
official Binance spot SDK: Binance's field names, only the calling account's lists, paging by fromId/limit."""

from __future__ import annotations

from decimal import Decimal

from binance_sdk_spot.spot import ConfigurationRestAPI, Spot

from tests.integration.test_router_b2 import spot, venue  # noqa: F401 - fixture
from tests.integration.test_spot_reconciler import foreign_oco


def sdk(v, account: str = "main"):
    key, secret = v.keys[account]
    return Spot(config_rest_api=ConfigurationRestAPI(api_key=key, api_secret=secret, base_path=v.base_url)).rest_api


def test_open_and_all_order_lists(venue):  # noqa: F811
    first, tp1, sl1 = foreign_oco(venue, "l1")
    second, _, _ = foreign_oco(venue, "l2")
    sdk(venue).delete_order_list(symbol="BTCUSDT", list_client_order_id=first)
    [open_] = [x.to_dict() for x in sdk(venue).open_order_list().data()]
    assert open_["listClientOrderId"] == second and open_["listStatusType"] == "EXEC_STARTED"
    assert open_["contingencyType"] == "OCO" and open_["symbol"] == "BTCUSDT" and len(open_["orders"]) == 2
    every = [x.to_dict() for x in sdk(venue).all_order_list().data()]
    assert [x["listClientOrderId"] for x in every] == [first, second]
    assert every[0]["listOrderStatus"] == "ALL_DONE"
    assert {o["clientOrderId"] for o in every[0]["orders"]} == {tp1, sl1}
    later = [x.to_dict() for x in sdk(venue).all_order_list(from_id=every[1]["orderListId"], limit=5).data()]
    assert [x["listClientOrderId"] for x in later] == [second]
    assert [x.to_dict() for x in sdk(venue).all_order_list(limit=1).data()][0]["listClientOrderId"] == first
    # Another account sees none of main's lists.
    assert sdk(venue, "sub1").open_order_list().data() == [] and sdk(venue, "sub1").all_order_list().data() == []
    assert Decimal(str(spot(venue).query("BTCUSDT", tp1).qty)) == Decimal("0.001")
