"""Binance's local order book sequencing rules (futures pu chain, spot U = u + 1), with update ids
and levels from the real 2024-08-08 recordings (ws_streams_depth_trades_bookticker)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chimera.venues.binance.order_book import OrderBook, SequenceGap

# BTCUSDT USDT-M: snapshot lastUpdateId 5123107852948 was fetched while these diffs streamed.
FUT_SNAPSHOT = {"lastUpdateId": 5123107852948, "bids": [["61000.00", "1.5"], ["60999.90", "2.0"]],
                "asks": [["61000.10", "0.7"], ["61000.20", "3.1"]]}
FUT_BEFORE = {"U": 5123107846704, "u": 5123107850146, "pu": 5123107846634, "b": [], "a": []}
FUT_STRADDLE = {"U": 5123107850310, "u": 5123107853551, "pu": 5123107850146,
                "b": [["61000.00", "0"], ["60999.80", "4"]], "a": [["61000.10", "0.9"]]}
FUT_NEXT = {"U": 5123107853748, "u": 5123107856210, "pu": 5123107853551, "b": [], "a": [["61000.20", "0"]]}


def fut_book() -> OrderBook:
    book = OrderBook("BTCUSDT", "perp")
    book.load(FUT_SNAPSHOT)
    return book


def test_futures_drops_older_events_links_the_straddling_one_then_follows_pu():
    book = fut_book()
    assert book.apply(FUT_BEFORE) is False  # u < lastUpdateId: already in the snapshot
    assert book.apply(FUT_STRADDLE) is True
    assert book.apply(FUT_NEXT) is True
    assert book.last_id == 5123107856210
    assert book.top(5) == ([(Decimal("60999.90"), Decimal("2.0")), (Decimal("60999.80"), Decimal("4"))],
                           [(Decimal("61000.10"), Decimal("0.9"))])
    assert book.apply(FUT_NEXT) is False  # delivered twice


def test_futures_first_event_may_start_after_the_snapshot_when_pu_links_it():
    # ETHUSDT: snapshot 5123107856276; the next ETH event starts at 5123107856317 (ids are shared by
    # all symbols) and its pu is the snapshot's id.
    book = OrderBook("ETHUSDT", "perp")
    book.load({"lastUpdateId": 5123107856276, "bids": [["2600", "1"]], "asks": [["2600.01", "1"]]})
    assert book.apply({"U": 5123107856317, "u": 5123107858544, "pu": 5123107856276, "b": [], "a": []})


def test_futures_gap_raises():
    book = fut_book()
    book.apply(FUT_STRADDLE)
    with pytest.raises(SequenceGap):
        book.apply({"U": 5123107856267, "u": 5123107858366, "pu": 5123107856210, "b": [], "a": []})
    snapshot_too_old = fut_book()
    with pytest.raises(SequenceGap):
        snapshot_too_old.apply(FUT_NEXT)  # neither straddles nor links to lastUpdateId


def test_spot_rules():
    # BTCUSDT spot: snapshot 50093239218 inside the buffered event [50093239208, 50093239224].
    book = OrderBook("BTCUSDT", "spot")
    book.load({"lastUpdateId": 50093239218, "bids": [["60000.01", "1"]], "asks": [["60000.02", "2"]]})
    assert book.apply({"U": 50093239203, "u": 50093239207, "b": [], "a": []}) is False
    assert book.apply({"U": 50093239208, "u": 50093239224, "b": [["60000.01", "0.5"]], "a": []})
    assert book.apply({"U": 50093239225, "u": 50093239237, "b": [], "a": [["60000.03", "1"]]})
    with pytest.raises(SequenceGap):
        book.apply({"U": 50093239239, "u": 50093239407, "b": [], "a": []})
    assert book.top(1) == ([(Decimal("60000.01"), Decimal("0.5"))], [(Decimal("60000.02"), Decimal("2"))])


def test_no_snapshot_no_book():
    with pytest.raises(SequenceGap):
        OrderBook("BTCUSDT", "spot").apply({"U": 1, "u": 2, "b": [], "a": []})
    with pytest.raises(ValueError):
        OrderBook("BTCUSDT", "coinm")
