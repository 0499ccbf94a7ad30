"""The in-memory bar store forgets bars as Redis's does (``record_bar``'s trim, ``BARS_KEEP_MS``).

Without the trim a backtest kept every closed bar it ever saw: a year of two symbols' 1m bars is about
120 MB of the 500 MB budget (issue 12 item 7). Redis, fed the same bars by ``record_bar``, is the
reference: after every bar both stores answer the same closes, and memory holds no more than Redis.
"""

from __future__ import annotations

import pytest

from chimera.ports.features import BARS_KEEP_MS, MemoryFeatureState, RedisFeatureState, StoredBar, record_bar
from chimera.streams import keys
from chimera.streams.redis import connect
from tests.conftest import _flush as flush

M = 60_000
T0 = 1_751_760_000_000


@pytest.fixture(params=["single", "cluster"])
def r(request):
    server = request.getfixturevalue("redis_server" if request.param == "single" else "redis_cluster")
    client = connect(server.url)
    flush(client)
    yield client
    client.close()


def _both(r, mem: MemoryFeatureState, symbol: str, t: int, close: float) -> None:
    c = str(close)
    record_bar(r, symbol, StoredBar(t, c, c, c, c, "1"))
    mem.bar_closed(symbol, t, close)


def test_memory_bar_store_trims_like_redis(r):
    mem = MemoryFeatureState()
    step = 30 * M  # half-hourly bars: four days in 192 bars keep the test quick; the trim is by time
    times = [T0 + i * step for i in range(4 * 48)]
    for i, t in enumerate(times):
        _both(r, mem, "BTCUSDT", t, 100.0 + i)
        if i % 16 == 0 or t - T0 >= BARS_KEEP_MS - step:
            # A fresh reader each time: RedisFeatureState memoises, the ZSET itself is the truth.
            assert mem.closes("BTCUSDT", None, t) == RedisFeatureState(r).closes("BTCUSDT", None, t), t
    last = times[-1]
    kept = mem.closes("BTCUSDT", None, last)
    assert kept[0][0] == min(t for t in times if t > last - BARS_KEEP_MS)  # older bars are gone
    assert len(mem._bars["BTCUSDT"]) == r.zcard(keys.mkt_bars("BTCUSDT")) == len(kept)
    # A re-sent old bar trims by its own time, as record_bar does, and replaces its namesake.
    _both(r, mem, "BTCUSDT", times[-5], 7.0)
    assert mem.closes("BTCUSDT", None, last) == RedisFeatureState(r).closes("BTCUSDT", None, last)
    assert (times[-5], 7.0) in mem.closes("BTCUSDT", None, last)
