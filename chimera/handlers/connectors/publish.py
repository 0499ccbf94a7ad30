"""How S1 publishes a closed bar: record it in the bar store, then XADD the Kline (one pipeline).

Kept separate so tests and replays publish bars with exactly S1's discipline.
"""

from __future__ import annotations

from chimera.handlers.features.bars import StoredBar, record_bar
from chimera.schemas.envelope import encode
from chimera.schemas.messages import Kline
from chimera.streams import keys
from chimera.streams.producer import DEFAULT_MAXLEN, Emit, envelope_for
from chimera.streams.redis import retry_redis


def kline_key(k: Kline) -> str:
    return f"kline:{k.market}:{k.symbol}:{k.interval}:{k.open_time}"


@retry_redis
def publish_closed_kline(r, k: Kline, now_ms: int, account_id: str = "main") -> None:
    """Bar store first, stream second: whoever reads the stream finds the bar in the store."""
    record_bar(r, k.symbol, StoredBar(k.open_time, str(k.open), str(k.high), str(k.low), str(k.close), str(k.volume)))
    env = envelope_for(Emit(keys.mkt_stream(k.market, k.symbol), k, kline_key(k), account_id, k.close_time),
                       parent=None, now_ms=now_ms)
    r.xadd(keys.mkt_stream(k.market, k.symbol), encode(env), maxlen=DEFAULT_MAXLEN, approximate=True)
