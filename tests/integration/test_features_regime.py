"""S2's daily regime on the Redis runtime (single and cluster): the worker returns the timer, the
runtime writes it into the due-queue, the scheduler's fire turns it into a message, and the regime
lands in Redis through the risk port with the next day's tick armed."""

from __future__ import annotations

import math

from chimera.feeds.publish import BatchWriter
from chimera.handlers.features.regime import DAY_MS
from chimera.handlers.features.role import SPEC
from chimera.handlers.strategy.replay import _bars
from chimera.risk.state import RedisState
from chimera.schemas.messages import Kline
from chimera.streams import keys
from chimera.workers import scheduler
from chimera.workers.clock import ManualClock
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker
from tests.unit.test_features_regime import _expected


def test_regime_timer_goes_through_the_due_queue_and_the_risk_port(r, settings):
    bars = _bars("BTCUSDT", 1445)  # July 6 00:00 .. July 7 00:04: the whole day before the tick
    day0 = bars[0].open_time - bars[0].open_time % DAY_MS
    due = day0 + DAY_MS + 5 * 60_000
    clock = ManualClock(day0 + 12 * 3_600_000)  # the worker starts at noon: the next tick is tomorrow's
    writer = BatchWriter(r, clock)
    for b in bars:
        writer.add_closed_bar(Kline(market="perp", symbol="BTCUSDT", interval="1m", open_time=b.open_time,
                                    close_time=b.open_time + 59_999, open=b.open, high=b.high, low=b.low,
                                    close=b.close, volume=b.volume))
    writer.flush()
    with ThreadWorker(SPEC, r, settings, "s2-regime", clock=clock):
        wait_until(lambda: r.xlen(keys.feat_stream("BTCUSDT")) == len(bars), timeout=60, message="features")
        assert scheduler.armed(r, keys.REGIME_TIMER) == due  # armed once, by the first bar published
        assert scheduler.fire_due(r, due - 1) == 0
        clock.set(due + 1500)
        assert scheduler.fire_due(r, due) == 1
        risk = RedisState(r)
        wait_until(lambda: risk.regime_state() is not None, timeout=30, message="regime written")
        state = risk.regime_state()
        wait_until(lambda: scheduler.armed(r, keys.REGIME_TIMER) == due + DAY_MS, timeout=10, message="next tick")
    ((regime, pct, rv),) = _expected(bars, [due], 5)
    assert (state.regime, state.pct, state.reason, state.rev, state.as_of) == (
        regime, pct, "insufficient_history", 1, due)
    assert math.isclose(state.rv, rv, rel_tol=1e-9)
    assert 0 < r.pttl(keys.REGIME_STATE) <= 26 * 3_600_000 - 1500
    assert risk.regime() == "NORMAL"
