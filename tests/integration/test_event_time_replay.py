"""Paper replay in event time (issue 12 item 3): at speed "max" a decision made on the bar of market
minute M reaches the venue in minute M, and timers last market time.

Real parts on real Redis (standalone and the 6-node cluster): the local venue server replaying the
shipped BTC/ETH 1m klines paced by the pipeline (``--pace-redis``) and publishing its replay clock;
S1 (market WebSocket → ``mkt:*``, user data → ``venue:{reports}``), S2, S3, S4, S6 and the scheduler
as real workers, every one on ``CHIMERA_CLOCK=follow`` (``FollowClock`` over ``replay:{clock}``).
Asserted from the venue's own order timestamps against the signals' event time (``t0``: the bar's
close + 1 ms) and the bundle's maker window.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from chimera.feeds import role as s1_role
from chimera.handlers.features.role import SPEC as S2
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.handlers.strategy.role import SPEC as S3
from chimera.store import collections as C
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.redis import connect
from chimera.venues.local.pacing import DrainGate
from chimera.venues.local.replay import DataSpec
from chimera.venues.local.replay.feed import SAMPLE_DIR
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from chimera.workers.clock import follow_redis
from chimera.workers.config import activate
from chimera.workers.runtime import Worker
from chimera.workers.scheduler_role import run_scheduler
from tests.integration.parity_bundles import BUNDLES
from tests.support.polling import wait_until

SYMS = ("BTCUSDT", "ETHUSDT")
START = 1751760000000  # 2025-07-06T00:00Z, the sample's first bar
MINUTES = 45
MINUTE = 60_000


def _specs() -> list[DataSpec]:
    return [DataSpec("ft_klines", str(SAMPLE_DIR / f"{s[:-4]}_USDT_USDT-1m-futures.feather"), "futures", s) for s in SYMS]


@pytest.mark.timeout(600)
def test_decisions_reach_the_venue_in_their_market_minute_at_max_speed(redis_url, r, settings, tmp_path):
    bundle, _ = BUNDLES["maker_then_taker"]
    wait_ms = bundle["router"]["maker_wait_ms"]
    venue = start_venue(VenueConfig(data=_specs(), speed=0.0, start_ms=START, end_ms=START + MINUTES * MINUTE - 1,
                                    pace_redis_url=redis_url, pace_timeout_s=60, orders_per_10s=10**6,
                                    orders_per_minute=10**6, weight_per_minute=10**9,
                                    state_file=str(tmp_path / "venue.json")))
    s = dataclasses.replace(settings, symbols=SYMS, venue="paper", venue_url=venue.base_url, clock="follow",
                            extra={"user_data": True})
    store = open_store(s.store_url)
    activate(store, bundle["bundle_id"], 1, bundle)
    stop = threading.Event()
    workers = [Worker(spec, connect(redis_url), settings=s, store=open_store(s.store_url),
                      clock=follow_redis(r, keys.REPLAY_CLOCK, wait_s=10), consumer=f"et-{spec.role}")
               for spec in (S2, S3, S4, S6)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    threads.append(threading.Thread(target=run_scheduler, daemon=True,
                                    args=(connect(redis_url), follow_redis(r, keys.REPLAY_CLOCK), "et-sched", stop)))
    threads.append(threading.Thread(target=s1_role.run, args=(s, stop), daemon=True))
    gate = DrainGate(redis_url, SYMS)
    try:
        for t in threads:
            t.start()
        hub = venue.server.hub
        def subscribed() -> bool:  # S1's market stream (both symbols' klines) and its user-data stream
            subs = set().union(*(c.subs for c in hub.conns)) if hub.conns else set()
            return ({f"{sym.lower()}@kline_1m" for sym in SYMS} <= subs
                    and any(k in subs for k in list(venue.server.listen_keys)))

        wait_until(subscribed, timeout=60, message="S1 subscribed to the venue (klines and user data)")
        venue.control("/chimera/v1/replay", {"speed": "max"})
        wait_until(lambda: venue.control("/chimera/v1/clock")["done"], timeout=400, interval=0.2,
                   message="the paced replay reached the end of the data")
        wait_until(lambda: not gate.busy_groups(), timeout=60, message="the pipeline drained")
        clock = venue.control("/chimera/v1/clock")
    finally:
        stop.set()
        for w in workers:
            w.stop()
        for t in threads:
            t.join(10)
        gate.close()
        venue.stop()

    assert clock["pace"]["timeouts"] == 0, clock  # the venue always waited for the pipeline
    engine = venue.server.engine
    by_client = {o.client_id: o for o in engine.orders.values() if o.account == "main"}
    legs = [d for d in store.query(C.ORDERS) if d.get("purpose") == "ENTRY"]
    assert legs, "no entry reached the venue: the scenario must trade"
    checked, windows = 0, []
    for leg in legs:
        intent = store.get(C.ORDER_INTENTS, leg["intent_id"])
        signal = store.get(C.SIGNALS, intent["signal_id"])
        decided_at = signal["t0"] - 1  # the bar's last millisecond: market minute M
        at_venue = by_client[leg["client_order_id"]].time
        if leg["leg"] == "mk":
            # The maker leg is sent while the venue waits at the end of minute M.
            assert at_venue == decided_at, (leg["client_order_id"], at_venue, decided_at)
            checked += 1
        elif leg["leg"] == "tk":
            maker = next(d for d in legs if d["intent_id"] == leg["intent_id"] and d["leg"] == "mk")
            windows.append((at_venue - by_client[maker["client_order_id"]].time, at_venue, intent["maker_deadline"]))
        assert decided_at <= at_venue < decided_at + MINUTE + wait_ms, (leg, at_venue, decided_at)
    assert checked >= 2, legs
    # Timers in market time: a maker window that ran out sent its taker leg at the window's deadline
    # of market time (the decision's event time + maker_wait_ms), the venue having stopped there for
    # the scheduler; on the wall clock at "max" speed the window lasts a few milliseconds.
    assert windows, "no maker window ran out"
    for waited, at_venue, deadline in windows:
        assert at_venue == deadline and wait_ms <= waited <= wait_ms + 1, windows
