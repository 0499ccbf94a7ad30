"""B9 (a worse health grade tightens the open stop) and STAGNATED through S4/S6 workers on real Redis
(standalone + cluster) against the local futures venue via the official SDK. The venue replay is paused,
so its mark does not move between the test's read and S6's pass; the expected stop is worked out here
from the venue's own mark and stop order, and the result is read from the venue's open algo orders."""

from __future__ import annotations

import time
from decimal import ROUND_DOWN, Decimal

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.risk.state import RedisState
from chimera.workers.config import activate
from tests.integration.test_positions_b3 import SYM, open_long, venue  # noqa: F401 - fixtures
from tests.integration.test_router_b1 import env  # noqa: F401 - fixtures
from tests.support.futures_venue import fut
from tests.support.polling import wait_until
from tests.support.positions import pos_events, tick, venue_stops, wait_pass
from tests.support.workers import ThreadWorker

DAY = 86_400_000
TICK = Decimal("0.1")


def mark(f) -> Decimal:
    return Decimal(str(f.position_risk(SYM)[0]["markPrice"]))


def test_orange_then_red_tighten_the_venue_stop_toward_the_mark(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": {"tick_ms": 0}})
    f = fut(venue)
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "hs-1")
        tick(r, "g0")
        wait_pass(store, "hs-1", "g0")  # managed under GREEN
        [before] = venue_stops(f, SYM)
        RedisState(r).set_health("ORANGE", DAY)
        m = mark(f)
        want = (m - (m - before.stop_price) * Decimal("0.75")).quantize(TICK, rounding=ROUND_DOWN)
        tick(r, "o1")
        pos = wait_pass(store, "hs-1", "o1")
        [orange] = venue_stops(f, SYM)
        assert orange.stop_price == want == pos.stop.price > before.stop_price
        tick(r, "o2")  # ORANGE again: no second move
        wait_pass(store, "hs-1", "o2")
        assert [o.stop_price for o in venue_stops(f, SYM)] == [want]
        RedisState(r).set_health("RED", DAY)
        m = mark(f)
        want_red = (m - (m - want) * Decimal("0.5") / Decimal("0.75")).quantize(TICK, rounding=ROUND_DOWN)
        tick(r, "r1")
        wait_pass(store, "hs-1", "r1")
        [red] = venue_stops(f, SYM)
        assert red.stop_price == want_red > want and red.qty == Decimal("0.010")
        assert f.query(SYM, before.client_order_id, algo=True).status == "CANCELED"


def test_a_flat_position_is_announced_stagnated_once(r, env, venue):  # noqa: F811
    s, store = env
    # Paused market: ROE stays where it is (well inside 5 %) for as long as the test waits.
    activate(store, "b", 1, {"positions": {"tick_ms": 0}, "autopsy": {"stagnation_band": 0.05,
                                                                      "stagnation_ms": 1500}})
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        open_long(r, venue, store, "st-1")
        tick(r, "s0")
        first = wait_pass(store, "st-1", "s0")
        assert first.flat_since and not pos_events(r, "STAGNATED")
        n = 0
        deadline = time.monotonic() + 30
        while not pos_events(r, "STAGNATED") and time.monotonic() < deadline:
            n += 1
            tick(r, f"s{n}")
            wait_pass(store, "st-1", f"s{n}")
        [ev] = pos_events(r, "STAGNATED")
        pos = wait_pass(store, "st-1", f"s{n}")
        assert ev.pos_id == "st-1" and pos.stagnated_at - first.flat_since >= 1500
        for k in range(n + 1, n + 4):  # more flat passes: still once
            tick(r, f"s{k}")
            wait_pass(store, "st-1", f"s{k}")
        assert len(pos_events(r, "STAGNATED")) == 1
        wait_until(lambda: venue_stops(fut(venue), SYM), timeout=5, message="still protected")
