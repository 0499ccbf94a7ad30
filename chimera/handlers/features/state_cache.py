"""S2's engines: in memory per replica, written back through the feature port once per read batch.

* ``load_engine(ctx, symbol, cfg, check)``: the replica's engine for the symbol. With ``check``
  (closed bars), the first bar of each read batch asks the port for the cache's seq: another
  replica wrote since the seq this replica last read or wrote (the lease moved away and back) →
  reload the cached state (the port answers the blob in the same round trip). Book, mark and
  funding updates only touch memory.
* ``end_batch(ctx)`` (``HandlerSpec.end_batch``: the runtime calls it after a read batch and
  *before* it acks the batch): every engine changed in the batch is saved in one transaction and
  its seq incremented. So the cache always equals the state after the last acked entry: a replica
  killed mid-batch leaves the batch unacked and the cache at the previous batch, and the new owner
  replays the batch onto it.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger

from chimera.handlers.features.engine import FeatureConfig, FeatureEngine
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
    checked = _checked(ctx)
    if fresh and (not check or symbol in checked):
        return held.engine
    checked.add(symbol)
    seq, blob = ctx.features.load(symbol, held.seq if fresh else -1)
    if fresh and held.seq == seq:
        return held.engine
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


def end_batch(ctx: Context) -> None:
    _checked(ctx).clear()
    dirty = {s: h for s, h in _engines(ctx).items() if h.dirty}
    if not dirty:
        return
    seqs = ctx.features.save({s: h.engine.to_bytes() for s, h in dirty.items()})
    for symbol, held in dirty.items():
        held.seq, held.dirty = seqs[symbol], False
