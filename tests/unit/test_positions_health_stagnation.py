"""S6's management pass under the health grade (B9: a worse grade tightens open stops) and stagnation
(``PositionChanged(STAGNATED)`` for S8), with S4 on the in-process runtime against the venue engine.

What is asserted is what the venue holds (its resting stop orders) and what S6 published on ``pos:events``;
the expected stop prices are worked out by hand in each test from the bundle's factors and the tick.
"""

from __future__ import annotations

import random
from decimal import Decimal

from chimera.handlers.autopsy.stagnation import running, stagnated
from chimera.schemas.messages import PositionChanged
from chimera.streams import keys
from tests.unit.test_positions_inprocess import Chain, sl_cid

DAY = 86_400_000


def stop_prices(c: Chain) -> list[Decimal]:
    return [o.stop_price for o in c.stops()]


def test_a_worse_health_grade_tightens_the_open_stop_and_a_better_one_never_loosens_it():
    c = Chain({})  # default health_mult: ORANGE stop 0.75, RED stop 0.5
    c.market("50000")
    c.open_long("h1", sl="49500")
    assert stop_prices(c) == [Decimal("49500.1")]  # fill 50000.1 minus the intent's 500
    c.market("50100")  # GREEN: managed, nothing moves
    assert stop_prices(c) == [Decimal("49500.1")] and c.position("h1").health == "GREEN"
    c.ports.risk.set_health("ORANGE", DAY)
    c.market("50100")  # gap 599.9 x 0.75 = 449.925 below the mark: 49650.075, down to the tick
    assert stop_prices(c) == [Decimal("49650.0")]
    assert c.fut.query("BTCUSDT", sl_cid("h1", 1), algo=True).status == "CANCELED"
    c.market("50100")  # the same grade again: already tightened for it
    assert stop_prices(c) == [Decimal("49650.0")]
    c.ports.risk.set_health("RED", DAY)
    c.market("50100")  # RED after ORANGE: 0.5 / 0.75 of the gap 450.0 -> 300 below the mark
    assert stop_prices(c) == [Decimal("49800.0")]
    c.ports.risk.set_health("GREEN", DAY)
    c.market("50100")
    assert stop_prices(c) == [Decimal("49800.0")]  # better health: the stop stays where it is
    pos = c.position("h1")
    assert (pos.health, pos.sl_price, pos.stop.price) == ("GREEN", Decimal("49800.0"), Decimal("49800.0"))
    assert c.uncovered == []  # new stop before old, every time


def test_a_bundle_health_table_sets_the_factor():
    c = Chain({"health_mult": {"YELLOW": {"size": 1, "stop": 0.5}}})
    c.market("50000")
    c.open_long("h2", sl="49500")
    c.market("50000")
    c.ports.risk.set_health("YELLOW", DAY)
    c.market("50000")  # gap 499.9 x 0.5 = 249.95 -> 49750.05, down to the tick
    assert stop_prices(c) == [Decimal("49750.0")]


def stagnated_events(c: Chain) -> list[tuple[int, PositionChanged]]:
    return [(env.event_time, env.payload) for env in c.rt.entries(keys.POS_EVENTS)
            if isinstance(env.payload, PositionChanged) and env.payload.kind == "STAGNATED"]


def test_a_position_stuck_inside_the_band_is_announced_stagnated_once():
    c = Chain({}, autopsy={"stagnation_band": 0.01, "stagnation_ms": 5000})  # |ROE| <= 1 % for 5 s
    c.market("50000")
    c.open_long("s1", sl="49000")
    c.market("50010")  # ROE (50010 - 50000.1) / 50000.1 x 20 = 0.40 %: in the band, the run starts
    start = c.clock.now_ms()
    for _ in range(4):  # 4 s in the band: not yet
        c.market("49990")
        assert stagnated_events(c) == []
    assert c.position("s1").flat_since == start
    c.market("50005")  # 5 s in the band
    [(_, ev)] = stagnated_events(c)
    assert (ev.pos_id, ev.symbol, ev.qty) == ("s1", "BTCUSDT", Decimal("0.010"))
    assert c.position("s1").stagnated_at == c.clock.now_ms() == start + 5000
    c.market("50300")  # ROE 12 %: out of the band
    for _ in range(8):
        c.market("50000")
    assert len(stagnated_events(c)) == 1  # once per position


def test_a_move_out_of_the_band_restarts_the_clock():
    c = Chain({}, autopsy={"stagnation_band": 0.01, "stagnation_ms": 5000})
    c.market("50000")
    c.open_long("s2", sl="49000")
    for price in ("50010", "50010", "50010", "50200", "50010", "50010", "50010", "50010", "50010"):
        c.market(price)  # the run restarts after 50200 (ROE 4 %): 4 s in the band at the end
    assert stagnated_events(c) == [] and c.position("s2").flat_since == c.clock.now_ms() - 4000
    c.market("50010")
    assert len(stagnated_events(c)) == 1


def test_without_the_bundle_parameters_nothing_is_announced():
    c = Chain({})
    c.market("50000")
    c.open_long("s3", sl="49000")
    for _ in range(10):
        c.market("50000")
    assert stagnated_events(c) == []


def test_the_running_rule_gives_what_the_sample_rule_gives():
    rng = random.Random(7)
    for _ in range(200):
        samples, t = [], 0
        since, hit = 0, False
        for _ in range(rng.randint(1, 40)):
            t += rng.randint(1, 3) * 1000
            roe = rng.choice([0.001, -0.002, 0.004, 0.02])
            samples.append((t, roe))
            since, hit = running(since, t, roe, 0.005, 6000)
            assert hit == stagnated(samples, 0.005, 6000), samples
