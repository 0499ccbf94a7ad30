"""Signed-request checks, Binance error codes/messages, rate-limit headers; never a 500."""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse

import binance_common.utils as sdk_utils
import pytest
import requests
from binance_common.errors import BadRequestError, UnauthorizedError
from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
    ConfigurationRestAPI,
    DerivativesTradingUsdsFutures,
)

from .conftest import book, futures, inject, rest_cfg, spot, trade


def _prime(v):
    inject(v, book("BTCUSDT", "30000.0", "30000.1"), trade("BTCUSDT", "30000.0"),
           book("BTCUSDT", "30000.00", "30000.01", "spot"), trade("BTCUSDT", "30000.00", "spot"))


def test_bad_signature_is_rejected_with_1022(bare_venue):
    key, _ = bare_venue.keys["main"]
    client = DerivativesTradingUsdsFutures(config_rest_api=ConfigurationRestAPI(
        api_key=key, api_secret="not-the-secret", base_path=bare_venue.base_url)).rest_api
    with pytest.raises(BadRequestError) as err:
        client.account_information_v3()
    assert err.value.status_code == -1022
    assert err.value.error_message == "Signature for this request is not valid."


def test_stale_timestamp_is_rejected_with_1021(bare_venue, monkeypatch):
    monkeypatch.setattr(sdk_utils, "get_timestamp", lambda: int(time.time() * 1000) - 120_000)
    with pytest.raises(BadRequestError) as err:
        futures(bare_venue).account_information_v3()
    assert err.value.status_code == -1021
    assert err.value.error_message == "Timestamp for this request is outside of the recvWindow."


def test_unknown_api_key_is_rejected_with_2015(bare_venue):
    client = DerivativesTradingUsdsFutures(config_rest_api=ConfigurationRestAPI(
        api_key="A" * 64, api_secret="x", base_path=bare_venue.base_url)).rest_api
    with pytest.raises(UnauthorizedError) as err:
        client.futures_account_balance_v3()
    assert err.value.status_code == -2015


@pytest.mark.parametrize("kwargs, code, msg", [
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01), -1102,
     "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
    (dict(symbol="NOPEUSDT", side="BUY", type="MARKET", quantity=0.01), -1121, "Invalid symbol."),
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01, price=29000.123), -1111,
     "Precision is over the maximum defined for this asset."),
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.0001, price=29000), -1111,
     "Precision is over the maximum defined for this asset."),
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.001, price=9000), -4164,
     "Order's notional must be no smaller than 10 (unless you choose reduce only)."),
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01, price=29000.05), -4014,
     "Price not increased by tick size."),
])
def test_futures_order_rejections_carry_binance_codes(bare_venue, kwargs, code, msg):
    _prime(bare_venue)
    with pytest.raises(BadRequestError) as err:
        futures(bare_venue).new_order(**kwargs)
    assert (err.value.status_code, err.value.error_message) == (code, msg)


def test_spot_min_notional_and_lot_size_filters(bare_venue):
    _prime(bare_venue)
    client = spot(bare_venue)
    with pytest.raises(BadRequestError) as err:
        client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.0001,
                         price=20000)
    assert (err.value.status_code, err.value.error_message) == (-1013, "Filter failure: MIN_NOTIONAL")
    with pytest.raises(BadRequestError) as err:
        client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.000015,
                         price=20000)
    assert (err.value.status_code, err.value.error_message) == (-1013, "Filter failure: LOT_SIZE")


def _signed(venue, method: str, path: str, params: dict, account: str = "main") -> requests.Response:
    key, secret = venue.keys[account]
    params = {**params, "timestamp": int(time.time() * 1000)}
    qs = urllib.parse.urlencode(params)
    sig = hmac.new(secret.encode(), qs.encode(), hashlib.sha256).hexdigest()
    return requests.request(method, f"{venue.base_url}{path}?{qs}&signature={sig}",
                            headers={"X-MBX-APIKEY": key}, timeout=10)


@pytest.mark.parametrize("method, path, params", [
    ("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "abc",
                                "price": "1", "timeInForce": "GTC"}),
    ("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "SIDEWAYS", "type": "MARKET", "quantity": "1"}),
    ("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "NaN"}),
    ("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "WHATEVER", "quantity": "1"}),
    ("POST", "/fapi/v1/batchOrders", {"batchOrders": "{not json"}),
    ("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": "x1"}),
    ("GET", "/fapi/v1/order", {"symbol": "BTCUSDT"}),
    ("DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": "999"}),
    ("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "500"}),
    ("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "7m"}),
    ("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "1e999",
                               "price": "1", "timeInForce": "GTC"}),
    ("POST", "/api/v3/orderList/oco", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.1"}),
    ("POST", "/sapi/v1/asset/transfer", {"type": "MAIN_MARGIN", "asset": "USDT", "amount": "1"}),
    ("POST", "/sapi/v1/asset/transfer", {"type": "MAIN_UMFUTURE", "asset": "USDT", "amount": "1e12"}),
])
def test_bad_requests_get_a_binance_error_never_a_500(bare_venue, method, path, params):
    _prime(bare_venue)
    resp = _signed(bare_venue, method, path, params)
    assert 400 <= resp.status_code < 500, resp.text
    body = resp.json()
    assert isinstance(body["code"], int) and body["code"] < 0 and body["msg"]


def test_cancel_unknown_order_is_2011(bare_venue):
    _prime(bare_venue)
    resp = _signed(bare_venue, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": "999"})
    assert resp.json() == {"code": -2011, "msg": "Unknown order sent."}
    resp = _signed(bare_venue, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": "999"})
    assert resp.json() == {"code": -2013, "msg": "Order does not exist."}


def test_weight_and_order_count_headers(bare_venue):
    _prime(bare_venue)
    resp = futures(bare_venue).new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC",
                                         quantity=0.01, price=29000)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    assert int(headers["x-mbx-used-weight-1m"]) >= 1
    assert headers["x-mbx-order-count-10s"] == "1"
    assert headers["x-mbx-order-count-1m"] == "1"


def test_time_endpoints_follow_the_replay_clock(bare_venue):
    _prime(bare_venue)
    clock = bare_venue.control("/chimera/v1/clock")
    assert set(clock) >= {"time_ms", "speed", "progress", "done"}
    f = requests.get(f"{bare_venue.base_url}/fapi/v1/time", timeout=5).json()["serverTime"]
    s = requests.get(f"{bare_venue.base_url}/api/v3/time", timeout=5).json()["serverTime"]
    assert f == s == clock["time_ms"]


def test_rest_config_helper_matches_sdk_docs(bare_venue):
    cfg = rest_cfg(bare_venue)
    assert cfg.base_path == bare_venue.base_url
