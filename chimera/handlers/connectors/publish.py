"""How S1 writes to Redis: a closed bar goes to the bar store before its Kline goes on the stream.

``BatchWriter`` collects everything one drained WebSocket batch produces and writes it in two
pipelines: first the bar-store records of the batch's closed perp bars, then every XADD in
arrival order. One round trip per batch instead of one per event; and since the store pipeline
finishes before the stream pipeline starts, whoever reads a bar (or a later symbol's aligned bar)
from a stream finds it in the store, on a single Redis or a cluster alike.

``publish_closed_kline`` is the same discipline for one bar (tests and replays).
"""

from __future__ import annotations

from chimera.handlers.features.bars import StoredBar, record_bar
from chimera.schemas.envelope import Message, encode
from chimera.schemas.messages import Kline
from chimera.streams import keys
from chimera.streams.producer import DEFAULT_MAXLEN, Emit, envelope_for
from chimera.streams.redis import retry_redis


def kline_key(k: Kline) -> str:
    return f"kline:{k.market}:{k.symbol}:{k.interval}:{k.open_time}"


def _stored(k: Kline) -> StoredBar:
    return StoredBar(k.open_time, str(k.open), str(k.high), str(k.low), str(k.close), str(k.volume))


def _kline_entry(k: Kline, now_ms: int, account_id: str) -> tuple[str, dict]:
    stream = keys.mkt_stream(k.market, k.symbol)
    return stream, encode(envelope_for(Emit(stream, k, kline_key(k), account_id, k.close_time), parent=None,
                                       now_ms=now_ms))


@retry_redis
def publish_closed_kline(r, k: Kline, now_ms: int, account_id: str = "main") -> None:
    """Bar store first, stream second: whoever reads the stream finds the bar in the store."""
    record_bar(r, k.symbol, _stored(k))
    stream, fields = _kline_entry(k, now_ms, account_id)
    r.xadd(stream, fields, maxlen=DEFAULT_MAXLEN, approximate=True)


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
        self.entries.append(_kline_entry(k, self.clock.now_ms(), self.account_id))

    def __len__(self) -> int:
        return len(self.entries)

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
