"""B3 through S4/S6 on real Redis (standalone + cluster) and the local venue via the official SDKs:
trailing stop ladder, redelivery safety, take-profit ladder, add-ons.

The venue replays the real 2023-04-04 BTCUSDT USDT-M recording, paused; each step advances it and
drives one management tick. A long opened after 3000 events fills at 28146.5 and the mark then
climbs to ~28157 with dips (ROE at 20x up to ~0.75 %), so the ladders below are in small ROE
fractions. Protection is always judged from the venue's own open algo orders and position size.
"""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import pytest

from chimera.feeds.market import MarketDataConnector
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.risk.state import Limits, RedisState
from chimera.schemas.envelope import decode
from chimera.schemas.messages import OrderIntent, OrderResult
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import client_order_id
from chimera.venues.binance.market_data import futures_rest
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from tests.integration.test_router_b1 import env, submit, venue_orders  # noqa: F401 - fixtures
from tests.support.futures_venue import btc_futures_venue, fut
from tests.support.polling import wait_until
from tests.support.positions import (
    CoverageWatcher,
    drained,
    pos_events,
    position,
    settled,
    tick,
    user_data,
    venue_amt,
    venue_stops,
    wait_pass,
)
from tests.support.workers import ThreadWorker

SYM = "BTCUSDT"
TRAIL = {"trailing_enabled": True, "trailing_steps": [[0.002, 0.0002], [0.004, 0.0006], [0.006, 0.003]],
         "tick_ms": 0}
EVENTS_PER_STEP = 250


@pytest.fixture
def venue(tmp_path):
    """test_router_b1's replay venue with a REST weight budget that a continuous watcher cannot exhaust."""
    with btc_futures_venue(tmp_path, weight_per_minute=10_000_000) as v:
        yield v


def open_long(r, venue, store, pos_id: str, qty: str = "0.010") -> None:
    sl = (fut(venue).book(SYM).mid * Decimal("0.998")).quantize(Decimal("0.1"))
    submit(r, OrderIntent(intent_id=pos_id, market="FUT", symbol=SYM, side="BUY", qty=Decimal(qty),
                          exec_policy="MARKET", purpose="ENTRY", sl_price=sl))
    wait_until(lambda: [e for e in pos_events(r, "SL_ARMED") if e.pos_id == pos_id], timeout=20,
               message="first stop armed")


def step(r, venue, store, pos_id: str, i: int):
    venue.advance(events=EVENTS_PER_STEP)
    tick(r, f"tick-{i}")
    return wait_pass(store, pos_id, f"tick-{i}")


def sl_cid(pos_id: str, n: int) -> str:
    return client_order_id(f"{pos_id}:sl{n}", "sl")


def test_trailing_stop_moves_up_with_the_position_always_covered_at_the_venue(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": TRAIL})
    f = fut(venue)
    armed_prices = []
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "tr-1")
        with CoverageWatcher(f, SYM) as watch:
            for i in range(40):
                pos = step(r, venue, store, "tr-1", i)
                stops = venue_stops(f, SYM)
                # Settled: exactly one stop at the venue, for the full qty, at the level S6 armed.
                assert pos.state == "ACTIVE"
                assert len(stops) == 1 and stops[0].qty == venue_amt(f, SYM) == Decimal("0.010"), (i, stops)
                assert stops[0].stop_price == pos.stop.price and stops[0].client_order_id == pos.stop.client_order_id
                if not armed_prices or armed_prices[-1] != stops[0].stop_price:
                    armed_prices.append(stops[0].stop_price)
    assert watch.samples > 50 and watch.violations == []
    assert len(armed_prices) >= 3, armed_prices  # moved at least twice
    assert armed_prices == sorted(armed_prices)  # only ever up for a long
    level = position(store, "tr-1").stop.level
    assert len(pos_events(r, "TRAIL_MOVED")) == level - 1 >= 2
    for n in range(1, level):  # every replaced stop is cancelled at the venue
        assert f.query(SYM, sl_cid("tr-1", n), algo=True).status == "CANCELED"
    assert f.query(SYM, sl_cid("tr-1", level), algo=True).status == "NEW"
    assert store.get("positions_snapshots", f"tr-1:sl{level}")["stop"]["price"] == str(armed_prices[-1])
    latest = store.get("positions_snapshots", "tr-1:latest")
    assert Decimal(latest["roe"]) > Decimal("0.006") and Decimal(latest["liq_dist"]) > 0


def test_redelivered_tick_and_accepted_result_create_no_second_stop(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": TRAIL})
    f = fut(venue)
    with ThreadWorker(S6, r, s, "s6-a", store):
        with ThreadWorker(S4, r, s, "s4-a", store):
            open_long(r, venue, store, "rd-1")
        # S4 is down: the move to the first trailing step stays in flight while ticks repeat.
        venue.advance(events=EVENTS_PER_STEP * 9)  # ROE ~0.37 %: the first step is reached
        for key in ("t1", "t2", "t3"):
            tick(r, key)
        wait_until(lambda: (store.get("positions", "rd-1") or {}).get("last_pass") == "manage:rd-1:t3", timeout=20,
                   message="three passes")
        sl = position(store, "rd-1").stop
        assert sl.pending.intent_id == "rd-1:sl2" and sl.n == 2 and sl.intent_id == "rd-1:sl1"
        with ThreadWorker(S4, r, s, "s4-b", store):
            wait_until(lambda: (p := position(store, "rd-1")) is not None and settled(p) and p.stop.level == 2,
                       timeout=20, message="new stop armed, old cancelled")
            before = venue_orders(venue)
            accepted = [(decode(fl).payload) for _, fl in r.xrange(keys.ORD_RESULTS)]
            again = [x for x in accepted if isinstance(x, OrderResult) and x.purpose == "STOP" and x.status == "ACCEPTED"]
            assert {x.intent_id for x in again} == {"rd-1:sl1", "rd-1:sl2"}
            for j, res in enumerate(again):  # the same results once more, as a lost ack would redeliver them
                Producer(r, WallClock()).publish(keys.ORD_RESULTS, res, idempotency_key=f"again-{j}")
            tick(r, "t4")
            wait_pass(store, "rd-1", "t4")
            wait_until(lambda: drained(r, keys.ORD_RESULTS, "cg:s6") and drained(r, keys.ORD_COMMANDS, "cg:s4"),
                       timeout=20, message="redeliveries handled")
    assert venue_orders(venue) == before
    assert before[sl_cid("rd-1", 1)] == before[sl_cid("rd-1", 2)] == 1 and sl_cid("rd-1", 3) not in before
    assert [o.client_order_id for o in venue_stops(f, SYM)] == [sl_cid("rd-1", 2)]
    assert f.query(SYM, sl_cid("rd-1", 1), algo=True).status == "CANCELED"


def test_take_profit_ladder_exits_in_parts_and_the_rest_stays_covered(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": {"tp_ladder": [[0.002, 0.4], [0.004, 0.3], [0.006, 1.0]], "tick_ms": 0}})
    budget = RedisState(r)
    start = budget.usage(SYM)
    budget.reserve("tp-1", SYM, Decimal("15"), Limits(budget_usdt=Decimal("1000"), max_per_symbol=2, max_open=5))
    f = fut(venue)
    seen = []
    # S1's user data runs too: each partial exit reaches S6 twice (S4's result and the venue's report).
    with user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), \
            ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "tp-1")
        for i in range(40):
            pos = step(r, venue, store, "tp-1", i)
            amt = venue_amt(f, SYM)
            if pos.state == "CLOSED":
                break
            stops = venue_stops(f, SYM)
            assert len(stops) == 1 and stops[0].qty == amt == pos.qty, (i, amt, stops)
            if not seen or seen[-1] != amt:
                seen.append(amt)
        wait_until(lambda: not venue_stops(f, SYM), timeout=20, message="stop cancelled after the last rung")
        tp_reports = wait_until(lambda: [e for e in (decode(fl).payload for _, fl in r.xrange(keys.VENUE_REPORTS))
                                         if e.exec_type == "TRADE" and e.reduce_only], timeout=20,
                                message="the exits' venue reports")
        wait_until(lambda: drained(r, keys.VENUE_REPORTS, "cg:s6"), timeout=20, message="reports handled")
    assert len(tp_reports) >= 3
    assert seen == [Decimal("0.010"), Decimal("0.006"), Decimal("0.003")]
    assert venue_amt(f, SYM) == 0
    pos = position(store, "tp-1")
    assert pos.state == "CLOSED" and pos.exit_intent_id == "tp-1:tp3" and pos.close_reason == "TAKE_PROFIT"
    reduced = pos_events(r, "REDUCED")
    assert [e.qty for e in reduced] == [Decimal("0.006"), Decimal("0.003")]
    assert all(e.realized_pnl > 0 for e in reduced)
    for n, qty in ((1, "0.004"), (2, "0.003"), (3, "0.003")):
        assert f.query(SYM, client_order_id(f"tp-1:tp{n}", "mkt")).filled_qty == Decimal(qty)
    assert venue_orders(venue)[client_order_id("tp-1:tp1", "mkt")] == 1
    used = budget.usage(SYM)
    assert (used.in_use_usdt, used.per_symbol, used.open_positions) == (start.in_use_usdt, start.per_symbol,
                                                                        start.open_positions)
    assert pos.tp.done == (1, 2, 3) and not pos.tp.pending and pos.qty == 0 and pos.realized_pnl > 0


def test_add_ons_stop_at_max_adds_and_the_stop_follows_the_new_qty(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": {"max_adds": 2, "add_step_roe": 0.001, "add_fraction": 0.5, "tick_ms": 0}})
    r.set(keys.REGIME_STATE, '{"regime": "EXTREME"}')  # size x0.5: each add is 0.010 x 0.5 x 0.5 -> 0.002
    f = fut(venue)
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "ad-1")
        for i in range(14):
            pos = step(r, venue, store, "ad-1", i)
            stops = venue_stops(f, SYM)
            assert len(stops) == 1 and stops[0].qty == venue_amt(f, SYM) == pos.qty, (i, stops)
    assert venue_amt(f, SYM) == Decimal("0.014")
    orders = venue_orders(venue)
    assert orders[client_order_id("ad-1:add1", "mkt")] == orders[client_order_id("ad-1:add2", "mkt")] == 1
    assert client_order_id("ad-1:add3", "mkt") not in orders
    assert [e.qty for e in pos_events(r, "ADDED")] == [Decimal("0.012"), Decimal("0.014")]
    pos = position(store, "ad-1")
    fills = [(Decimal("0.010"), f.query(SYM, client_order_id("ad-1", "mkt")).avg_price)] + [
        (q, f.query(SYM, client_order_id(f"ad-1:add{k}", "mkt")).avg_price) for k, q in ((1, Decimal("0.002")),
                                                                                      (2, Decimal("0.002")))]
    assert pos.entry_price == sum(q * p for q, p in fills) / Decimal("0.014")
    assert pos.adds.count == 2 and pos.regime == "EXTREME"


def test_mark_price_events_drive_the_trailing_stop_without_ticks(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": TRAIL})
    s = dataclasses.replace(s, symbols=(SYM,))
    conn = MarketDataConnector(r=r, clock=WallClock(), ws_url=venue.ws_url, rest=futures_rest(venue.base_url),
                               symbols=[SYM], reconnect_delay_ms=200, metrics_every_s=0.5)
    conn.start()
    f = fut(venue)
    try:
        with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
            wait_until(lambda: any(c.subs for c in venue.server.hub.conns), timeout=20, message="S1 subscribed")
            open_long(r, venue, store, "mk-1")
            for _ in range(5):
                venue.advance(events=2000)
            wait_until(lambda: (p := position(store, "mk-1")) is not None and p.stop.level == 4 and settled(p),
                       timeout=30, message="fourth stop armed from mark events")
    finally:
        conn.stop()
    passes = [decode(fl).payload for _, fl in r.xrange(keys.POS_COMMANDS)]
    assert passes and all(p.pos_id == "mk-1" and p.mark_price is not None for p in passes)  # no tick at all
    assert store.get("positions", "mk-1")["last_pass"].startswith("manage:mk-1:mark:")
    [stop] = venue_stops(f, SYM)
    assert stop.client_order_id == sl_cid("mk-1", 4) and stop.qty == Decimal("0.010")
    assert all(f.query(SYM, sl_cid("mk-1", n), algo=True).status == "CANCELED" for n in (1, 2, 3))


def test_scheduler_ticks_manage_open_positions_with_roe_and_liquidation_distance(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": {"tick_ms": 200}})
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "sc-1")
        venue.advance(events=EVENTS_PER_STEP * 9)
        # Ticks run every 200 ms from the start: wait for one that began after the replay moved.
        moved_at = int(time.time() * 1000)
        pos = wait_until(lambda: (lambda p: p if (p.get("last_pass") or "").startswith("manage:sc-1:s6.tick:")
                                  and p.get("mark_source") == "venue" and int(p.get("managed_at") or 0) > moved_at
                                  else None)(store.get("positions", "sc-1")),
                         timeout=20, message="a scheduled pass after the replay moved")
        # The next tick is armed (by the tick's flush, or already fired and re-armed: poll for it).
        wait_until(lambda: r.zscore(keys.SCHED_DUE, keys.POS_TICK_TIMER) is not None, timeout=5,
                   message="the next tick armed")
    [risk] = fut(venue).position_risk(SYM)
    entry, mark, liq = (Decimal(str(risk[k])) for k in ("entryPrice", "markPrice", "liquidationPrice"))
    assert Decimal(pos["liq_price"]) == liq and pos["leverage"] == int(risk["leverage"])
    assert Decimal(pos["roe"]) == (Decimal(pos["mark"]) - entry) / entry * int(risk["leverage"])
    assert Decimal(pos["liq_dist"]) == abs(Decimal(pos["mark"]) - liq) / Decimal(pos["mark"])
    assert Decimal(pos["mark"]) == mark  # paused replay: the mark has not moved since the pass
    assert store.get("positions_snapshots", "sc-1:latest")["roe"] == pos["roe"]


def test_a_refused_new_stop_leaves_the_armed_one_in_place(r, env, venue):  # noqa: F811
    s, store = env
    # One step whose lock (28148.8 for the 28146.5 entry) the mark falls below before S4 can place it.
    activate(store, "b", 1, {"positions": {**TRAIL, "trailing_steps": [[0.002, 0.0017]]}})
    f = fut(venue)
    with ThreadWorker(S6, r, s, "s6-a", store):
        with ThreadWorker(S4, r, s, "s4-a", store):
            open_long(r, venue, store, "rf-1")
        venue.advance(events=EVENTS_PER_STEP * 10)  # mark ~28152.9: the step is reached
        tick(r, "t1")
        wait_until(lambda: position(store, "rf-1").stop.pending, timeout=20,
                   message="new stop in flight")
        venue.advance(events=4500)  # mark ~28148.7: the new stop would trigger at once
        with ThreadWorker(S4, r, s, "s4-b", store):
            wait_until(lambda: position(store, "rf-1").stop.refused, timeout=20,
                       message="new stop refused")
            tick(r, "t2")
            wait_pass(store, "rf-1", "t2")
            wait_until(lambda: drained(r, keys.ORD_COMMANDS, "cg:s4"), timeout=20, message="S4 idle")
    sl = position(store, "rf-1").stop
    assert sl.intent_id == "rf-1:sl1" and sl.n == 2 and "-2021" in sl.refused.reason
    assert [o.client_order_id for o in venue_stops(f, SYM)] == [sl_cid("rf-1", 1)]
    assert venue_stops(f, SYM)[0].qty == venue_amt(f, SYM) == Decimal("0.010")
    assert sl_cid("rf-1", 3) not in venue_orders(venue)  # the refused level is not retried at once
    assert store.get("positions", "rf-1")["state"] == "ACTIVE"
