"""userTrades paging as Binance has it: ``fromId`` returns the trades from that id on, oldest first (a
reader pages by id where many trades share a millisecond), and is refused beside a time range."""

from __future__ import annotations

import pytest
from binance_common.errors import BadRequestError

from .conftest import book, futures, inject, mark, trade


def test_from_id_pages_trades_oldest_first_and_is_refused_with_a_time_range(bare_venue):
    inject(bare_venue, book("BTCUSDT", "30000.0", "30000.1"), trade("BTCUSDT", "30000.0"), mark("BTCUSDT", "30000"))
    fut = futures(bare_venue)
    for i in range(3):
        fut.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01, new_client_order_id=f"fid-{i}")
    ids = [t.id for t in fut.account_trade_list(symbol="BTCUSDT").data()]
    assert len(ids) == 3 and ids == sorted(ids)
    page = fut.account_trade_list(symbol="BTCUSDT", from_id=ids[1], limit=1).data()
    assert [t.id for t in page] == [ids[1]]
    assert [t.id for t in fut.account_trade_list(symbol="BTCUSDT", from_id=ids[1]).data()] == ids[1:]
    with pytest.raises(BadRequestError) as err:
        fut.account_trade_list(symbol="BTCUSDT", from_id=ids[0], start_time=0)
    assert err.value.status_code == -1128
