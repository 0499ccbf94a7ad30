"""S2's daily regime in event time on the in-process runtime (no Redis): the timer the handlers
return fires at 00:05 UTC of each market day, the regime goes through the in-memory risk port,
and the figures match pandas computed here from the shipped BTCUSDT 1m sample."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd

from chimera.handlers.features.regime import DAY_MS
from chimera.handlers.features.role import SPEC
from chimera.handlers.strategy.replay import _bars
from chimera.schemas.messages import Kline
from chimera.store import open_store
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.inprocess import InProcessRuntime

AT_MIN = 5


def _expected(bars, ticks: list[int], min_history: int) -> list[tuple[str, float | None, float]]:
    """(regime, pct, rv) per tick: rv = stdev of the 1-minute log returns of the day before the
    tick, annualized; pct = share of the earlier days' rvs (up to 30) at or below it."""
    df = pd.DataFrame({"t": [b.open_time for b in bars], "c": [b.close for b in bars]}).set_index("t")
    out, history = [], []
    for as_of in ticks:
        day = df.loc[(df.index > as_of - DAY_MS - 60_000) & (df.index <= as_of - 60_000), "c"]
        if len(day) < 720:  # less than half a day of bars: not a day's volatility
            out.append(("NORMAL", None, None))
            continue
        adjacent = np.diff(day.index.to_numpy()) == 60_000
        rets = np.diff(np.log(day.to_numpy()))[adjacent]
        rv = float(pd.Series(rets).std(ddof=1)) * math.sqrt(525_600)
        hist = history[-30:]
        if len(hist) < min_history:
            out.append(("NORMAL", None, rv))
        else:
            pct = sum(h <= rv for h in hist) / len(hist)
            out.append(("FROZEN" if pct <= 0.1 else "EXTREME" if pct >= 0.9 else "NORMAL", pct, rv))
        history.append(rv)
    return out


def test_regime_ticks_daily_in_event_time_through_the_memory_risk_port():
    bars = _bars("BTCUSDT", None)
    store = open_store("sqlite://:memory:")
    settings = SimpleNamespace(symbols=("BTCUSDT",), extra={"regime_min_history": 3})
    rt = InProcessRuntime([SPEC], store=store, settings=settings, clock=ManualClock(0))
    seen = []
    for b in bars:
        rt.publish(keys.mkt_stream("perp", "BTCUSDT"),
                   Kline(market="perp", symbol="BTCUSDT", interval="1m", open_time=b.open_time,
                         close_time=b.open_time + 59_999, open=b.open, high=b.high, low=b.low, close=b.close,
                         volume=b.volume), f"k{b.open_time}", event_time=b.open_time + 59_999)
        rt.run()
        state = rt.ports.risk.regime_state()
        if state is not None and (not seen or seen[-1].rev != state.rev):
            seen.append(state)
    assert not rt.dead
    first_tick = bars[0].open_time - bars[0].open_time % DAY_MS + AT_MIN * 60_000  # the first bar arms it
    ticks = list(range(first_tick, bars[-1].open_time + 60_000, DAY_MS))
    assert len(ticks) >= 6
    assert [s.as_of for s in seen] == ticks and [s.rev for s in seen] == list(range(1, len(ticks) + 1))
    # Computed at the tick's event time, not later: the latency metric says 0.
    latencies = [e.payload.value for e in rt.entries(keys.metrics_stream("s2.regime_latency"))]
    assert latencies == [0.0] * len(ticks)
    want = _expected(bars, ticks, 3)
    assert want[0] == ("NORMAL", None, None) and seen[0].reason == "insufficient_bars"  # 5 bars at 00:05
    assert {w[0] for w in want} == {"NORMAL", "EXTREME", "FROZEN"}  # the sample's week shows all three
    for got, (regime, pct, rv) in zip(seen, want, strict=True):
        assert (got.rv is None) == (rv is None) and (rv is None or math.isclose(got.rv, rv, rel_tol=1e-9)), got
        assert (got.regime, got.pct) == (regime, pct)
        assert got.expires_at == got.as_of + 26 * 3_600_000
    assert store.count("regime_history", {"symbol": "BTCUSDT"}) == len(ticks) - 1
    # The next day's tick stays armed, under the one timer key every replica shares.
    assert rt.armed_timers() == {keys.REGIME_TIMER: ticks[-1] + DAY_MS}
