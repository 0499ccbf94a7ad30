"""The REST side of Binance user data through the official SDKs: listenKeys (create, keep-alive,
close), the reads S1's catch-up needs after a disconnection (open orders, recent fills, one order),
and the futures funding-fee history. Rows come back as plain dicts with Binance's field names.

``FuturesUserRest`` wraps the USDT-M futures SDK's ``rest_api``; ``SpotUserRest`` the spot SDK's.
The spot SDK (13.x) has no listenKey methods any more (Binance moved spot user data to the
WebSocket API), so those three calls go through the SDK's own signed-request helper on its session
and configuration (``POST|PUT|DELETE /api/v3/userDataStream``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chimera.venues.binance.user_data import D

TRADES_PAGE = 1000  # Binance's largest page of userTrades / myTrades


def _data(resp) -> Any:
    data = resp.data() if hasattr(resp, "data") else resp
    if isinstance(data, list):
        return [getattr(x, "actual_instance", x) for x in data]
    return getattr(data, "actual_instance", data)


def _plain(x: Any) -> dict:
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def _rows(resp) -> list[dict]:
    return [_plain(x) for x in _data(resp)]


class FuturesUserRest:
    market = "FUT"

    def __init__(self, rest) -> None:
        self.rest = rest

    def create_key(self) -> str:
        """POST: a new key, or the account's active one (Binance extends it)."""
        return _data(self.rest.start_user_data_stream()).listen_key

    def keepalive(self, key: str) -> None:
        self.rest.keepalive_user_data_stream()

    def close(self, key: str) -> None:
        self.rest.close_user_data_stream()

    def open_orders(self) -> list[dict]:
        return _rows(self.rest.current_all_open_orders())

    def trades(self, symbol: str, start_ms: int | None, limit: int = TRADES_PAGE, from_id: int | None = None) -> list[dict]:
        return _rows(self.rest.account_trade_list(symbol=symbol, start_time=start_ms, from_id=from_id, limit=limit))

    def order(self, symbol: str, order_id: int) -> dict:
        return _plain(_data(self.rest.query_order(symbol=symbol, order_id=order_id)))


class SpotUserRest:
    market = "SPOT"

    def __init__(self, rest) -> None:
        self.rest = rest

    def _stream_call(self, method: str, key: str | None = None) -> dict:
        from binance_common.utils import send_request

        params = {"listenKey": key} if key else None
        return send_request(self.rest._session, self.rest.configuration, method, "/api/v3/userDataStream",
                            params).data()

    def create_key(self) -> str:
        return self._stream_call("POST")["listenKey"]

    def keepalive(self, key: str) -> None:
        self._stream_call("PUT", key)

    def close(self, key: str) -> None:
        self._stream_call("DELETE", key)

    def open_orders(self) -> list[dict]:
        return _rows(self.rest.get_open_orders())

    def trades(self, symbol: str, start_ms: int | None, limit: int = TRADES_PAGE, from_id: int | None = None) -> list[dict]:
        return _rows(self.rest.my_trades(symbol=symbol, start_time=start_ms, from_id=from_id, limit=limit))

    def order(self, symbol: str, order_id: int) -> dict:
        return _plain(_data(self.rest.get_order(symbol=symbol, order_id=order_id)))


def user_rest(market: str, rest) -> FuturesUserRest | SpotUserRest:
    return SpotUserRest(rest) if market == "SPOT" else FuturesUserRest(rest)


def funding_income(rest, start_ms: int, limit: int = 1000) -> list[dict]:
    """FUNDING_FEE income rows from ``start_ms`` (inclusive), oldest first, Binance field names."""
    rows = _rows(rest.get_income_history(income_type="FUNDING_FEE", start_time=start_ms, limit=limit))
    return sorted(rows, key=lambda x: (int(x.get("time") or 0), int(x.get("tranId") or 0)))


def funding_rate_at(rest, symbol: str, funding_time: int) -> Decimal | None:
    """The settled rate of ``symbol`` at ``funding_time`` from the funding-rate history, if the venue has it."""
    try:
        rows = _rows(rest.get_funding_rate_history(symbol=symbol, start_time=funding_time - 60_000,
                                                   end_time=funding_time + 60_000, limit=10))
    except Exception:  # noqa: BLE001 - the rate is optional on the record
        return None
    best = min(rows, key=lambda x: abs(int(x.get("fundingTime") or 0) - funding_time), default=None)
    return D(best["fundingRate"]) if best and best.get("fundingRate") not in (None, "") else None
