"""How S1 writes to Redis: a closed bar goes to the bar store before its Kline goes on the stream.

``BatchWriter`` collects everything one drained WebSocket batch produces and writes it in two
pipelines: first the bar-store records of the batch's closed perp bars, then every XADD in
arrival order. One round trip per batch instead of one per event; and since the store pipeline
finishes before the stream pipeline starts, whoever reads a bar (or a later symbol's aligned bar)
from a stream finds it in the store, on a single Redis or a cluster alike.
"""

from __future__ import annotations

from chimera.ports.features import StoredBar, record_bar
from chimera.schemas.envelope import Message, encode
from chimera.schemas.messages import Kline
from chimera.streams import keys
from chimera.streams.producer import DEFAULT_MAXLEN, Emit, envelope_for
from chimera.streams.redis import retry_redis


def kline_key(k: Kline) -> str:
    return f"kline:{k.market}:{k.symbol}:{k.interval}:{k.open_time}"


def _stored(k: Kline) -> StoredBar:
    return StoredBar(k.open_time, str(k.open), str(k.high), str(k.low), str(k.close), str(k.volume))


class BatchWriter:
    def __init__(self, r, clock, account_id: str = "main", maxlen: int = DEFAULT_MAXLEN) -> None:
        self.r = r
        self.clock = clock
        self.account_id = account_id
        self.maxlen = maxlen
        self.bars: list[Kline] = []
        self.entries: list[tuple[str, dict]] = []

    def add(self, stream: str, payload: Message, key: str, event_time: int | None = None) -> None:
        env = envelope_for(Emit(stream, payload, key, self.account_id, event_time), parent=None,
                           now_ms=self.clock.now_ms())
        self.entries.append((stream, encode(env)))

    def add_closed_bar(self, k: Kline) -> None:
        """Perp bars are also recorded in ``mkt:{bars}:<SYM>`` (S2's rho reference); spot bars are not."""
        if k.market == "perp":
            self.bars.append(k)
        self.add(keys.mkt_stream(k.market, k.symbol), k, kline_key(k), event_time=k.close_time)

    @retry_redis
    def flush(self) -> int:
        """Write what was collected; returns the number of stream entries."""
        if self.bars:
            pipe = self.r.pipeline(transaction=False)
            for k in self.bars:
                record_bar(pipe, k.symbol, _stored(k))
            pipe.execute()
            self.bars = []
        n = len(self.entries)
        if n:
            pipe = self.r.pipeline(transaction=False)
            for stream, fields in self.entries:
                pipe.xadd(stream, fields, maxlen=self.maxlen, approximate=True)
            pipe.execute()
            self.entries = []
        return n
