"""S2's engines: in memory per replica, written back to ``feat:{cache}:<SYM>`` once per read batch.

* ``load_engine(ctx, symbol, cfg, check)``: the replica's engine for the symbol. With ``check``
  (closed bars), the first bar of each read batch compares ``feat:{cache}:<SYM>:seq`` with the
  seq this replica last read or wrote: another replica wrote since (the lease moved away and
  back) → reload the cached state. Book, mark and funding updates only touch memory.
* ``end_batch(ctx)`` (``HandlerSpec.end_batch``: the runtime calls it after a read batch and
  *before* it acks the batch): every engine changed in the batch is written in one MULTI (all
  ``feat:{cache}`` keys share a slot) and its seq incremented. So the cache always equals the
  state after the last acked entry: a replica killed mid-batch leaves the batch unacked and the
  cache at the previous batch, and the new owner replays the batch onto it.
* With ``ctx.redis`` None (the in-process runtime: recompute) the engines live in
  ``ctx.services`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger

from chimera.handlers.features.bars import MemoryBars, RedisBars
from chimera.handlers.features.engine import FeatureConfig, FeatureEngine
from chimera.streams import keys
from chimera.streams.redis import retry_redis
from chimera.workers.handler import Context


@dataclass
class Held:
    engine: FeatureEngine
    seq: int  # the cache's seq this engine corresponds to
    dirty: bool = False  # changed since it was loaded or written


def _engines(ctx: Context) -> dict[str, Held]:
    return ctx.services.setdefault("s2.engines", {})


def _checked(ctx: Context) -> set[str]:
    return ctx.services.setdefault("s2.checked", set())  # symbols whose seq was checked this batch


def load_engine(ctx: Context, symbol: str, cfg: FeatureConfig, check: bool) -> FeatureEngine:
    mem = _engines(ctx)
    held = mem.get(symbol)
    fresh = held is not None and held.engine.cfg == cfg
    if ctx.redis is None:
        if not fresh:
            held = mem[symbol] = Held(FeatureEngine.new(symbol, cfg), 0)
        return held.engine
    checked = _checked(ctx)
    if fresh and (not check or symbol in checked):
        return held.engine
    checked.add(symbol)
    seq_raw = ctx.redis.get(keys.feat_cache_seq(symbol))
    seq = int(seq_raw) if seq_raw else 0
    if fresh and held.seq == seq:
        return held.engine
    blob = ctx.redis.get(keys.feat_cache(symbol)) if seq else None
    engine = None
    if blob:
        try:
            engine = FeatureEngine.from_bytes(blob, cfg)
        except ValueError as exc:  # another config or state version: start cold, say so
            logger.warning("s2 {}: cached state not usable ({}); starting cold", symbol, exc)
    if engine is None:
        engine = FeatureEngine.new(symbol, cfg)
    mem[symbol] = Held(engine, seq)
    return engine


def touched(ctx: Context, symbol: str) -> None:
    """The symbol's engine changed: write it back at the end of the batch."""
    held = _engines(ctx).get(symbol)
    if held is not None:
        held.dirty = True


@retry_redis
def _write(r, dirty: list[tuple[str, Held]]) -> list:
    pipe = r.pipeline(transaction=True)  # every feat:{cache} key shares the {cache} slot
    for symbol, held in dirty:
        pipe.set(keys.feat_cache(symbol), held.engine.to_bytes())
        pipe.incr(keys.feat_cache_seq(symbol))
    return pipe.execute()


def end_batch(ctx: Context) -> None:
    _checked(ctx).clear()
    if ctx.redis is None:
        return
    dirty = [(s, h) for s, h in _engines(ctx).items() if h.dirty]
    if not dirty:
        return
    replies = _write(ctx.redis, dirty)
    for (_, held), seq in zip(dirty, replies[1::2], strict=True):
        held.seq, held.dirty = int(seq), False


def bar_source(ctx: Context):
    """The bar store reader, kept per replica so its memo of reference bars survives across entries."""
    if ctx.redis is not None:
        return ctx.services.setdefault("s2.redis_bars", RedisBars(ctx.redis))
    return ctx.services.setdefault("s2.bars", MemoryBars())
