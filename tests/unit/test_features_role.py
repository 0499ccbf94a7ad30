"""S2's route table on the in-process runtime: every message S1 puts on a perp stream is routed
(trades ignored, book and mark folded in), a type S2 does not route is dead-lettered with the
reason, and nothing here needs Redis."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from chimera.handlers.features.role import SPEC
from chimera.schemas.messages import BookTicker, DepthLevels, Kline, MarkPrice, Noop, TimerFired, Trade
from chimera.store import open_store
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.inprocess import InProcessRuntime

T = 1_751_760_000_000
PERP = keys.mkt_stream("perp", "BTCUSDT")


def test_s1_perp_messages_are_routed_and_an_unrouted_type_is_dead_lettered():
    rt = InProcessRuntime([SPEC], store=open_store("sqlite://:memory:"),
                          settings=SimpleNamespace(symbols=("BTCUSDT",), extra={}), clock=ManualClock(T))
    d = Decimal
    rt.publish(PERP, BookTicker(market="perp", symbol="BTCUSDT", bid=d("100"), bid_qty=d("1"), ask=d("100.2"),
                                ask_qty=d("2"), mid=d("100.1"), spread_bp=20.0, ts=T), "b1", event_time=T)
    rt.publish(PERP, Trade(market="perp", symbol="BTCUSDT", trade_id=1, price=d("100.1"), qty=d("1"),
                           buyer_is_maker=True, ts=T + 1), "t1", event_time=T + 1)
    rt.publish(PERP, DepthLevels(market="perp", symbol="BTCUSDT", bids=[(d("100"), d("3"))],
                                 asks=[(d("100.4"), d("1"))], ts=T + 2), "d1", event_time=T + 2)
    rt.publish(PERP, MarkPrice(symbol="BTCUSDT", mark_price=d("100.1"), funding_rate=d("0.0001"), ts=T + 3,
                               next_funding_time=T + 8 * 3_600_000), "m1", event_time=T + 3)
    rt.publish(keys.FEAT_COMMANDS, TimerFired(name="someone.else", due_ms=T), "x1", event_time=T + 4)
    rt.publish(PERP, Kline(market="perp", symbol="BTCUSDT", interval="1m", open_time=T, close_time=T + 59_999,
                           open=d("100"), high=d("101"), low=d("99"), close=d("100.5"), volume=d("5")), "k1",
               event_time=T + 59_999)
    rt.publish(PERP, Noop(n=1), "n1", event_time=T + 60_000)
    rt.run()
    assert [(s, reason) for s, _e, reason in rt.dead] == [(PERP, "permanent: role s2 has no route for message type noop")]
    (feat,) = [e.payload for e in rt.entries(keys.feat_stream("BTCUSDT"))]
    # The depth levels replaced the book ticker's book; the mark gave the predicted funding.
    assert feat.features["mid"] == 100.2 and feat.features["depth_bid"] == 300.0
    assert feat.features["funding_predicted"] == 0.0001 and feat.prev == {}
    assert rt.armed_timers() == {keys.REGIME_TIMER: T + 5 * 60_000}  # the first bar armed today's tick
