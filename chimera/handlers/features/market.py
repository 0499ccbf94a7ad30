"""S2's market-event handlers, per symbol in stream order (the role holds the symbol's lease).

* closed ``Kline`` (1m) → fold the rho reference's bars up to this minute (from the bar store,
  ``ctx.features.closes``), ``FeatureEngine.on_bar``, upsert ``signals/<signal_id>`` (features,
  flags, t0, config_rev), emit ``FeaturesComputed`` on ``feat:events:<SYM>``.
  ``signal_id = "<SYM>-<bar open ms>"``: a redelivered bar rewrites the same document and the
  engine ignores it (it re-emits the stored features, in case the crash came between the state
  save and the XADD). The first bar a worker publishes also arms the daily regime timer.
* ``BookTicker`` / ``DepthLevels`` → book features (once S1's depth levels arrive, bookTicker no
  longer overrides them); ``MarkPrice`` → predicted funding and minutes to funding; when the mark
  stream's next funding time moves on, the last predicted rate becomes the settled
  ``funding_rate``. Trades are not features. Nothing but a closed bar computes features.
"""

from __future__ import annotations

from chimera.errors import PermanentError
from chimera.handlers.features.engine import Bar, FeatureConfig, FeatureSnapshot
from chimera.handlers.features.regime import arm_regime_timer
from chimera.handlers.features.state_cache import load_engine, touched
from chimera.handlers.features.toolkit import (
    feature_config,
    reference_symbol,
    signal_doc,
    signal_id,
    write_signal,
)
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import BookTicker, DepthLevels, FeaturesComputed, FundingEvent, Kline, MarkPrice
from chimera.store.collections import SIGNALS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context


def is_closed_bar(k: Kline, cfg: FeatureConfig) -> bool:
    return k.closed and k.close_time - k.open_time + 1 == cfg.bar_ms  # not a forming bar, nor another interval


def fold_kline(ctx: Context, k: Kline, cfg: FeatureConfig) -> FeatureSnapshot | None:
    """Fold the closed bar (and the reference's bars up to it) into the symbol's engine; the
    snapshot, or None when the engine had already folded this bar in."""
    sym, ref = k.symbol, reference_symbol(ctx.settings)
    engine = load_engine(ctx, sym, cfg, check=True)
    close = float(k.close)
    ctx.features.bar_closed(sym, k.open_time, close)
    if sym == ref:
        engine.on_reference_bar(k.open_time, close)
    else:
        for t, c in ctx.features.closes(ref, engine.state.ref_last_open, k.open_time):
            engine.on_reference_bar(t, c)
    try:
        return engine.on_bar(Bar(k.open_time, float(k.open), float(k.high), float(k.low), close, float(k.volume)))
    except ValueError as exc:
        raise PermanentError(f"bad bar {sym} {k.open_time}: {exc}") from None


def on_kline(env: Envelope, ctx: Context) -> list[Emit]:
    k: Kline = env.payload
    cfg = feature_config(ctx)
    if not is_closed_bar(k, cfg):
        return []
    sym = k.symbol
    snap = fold_kline(ctx, k, cfg)
    sid = signal_id(sym, k.open_time)
    if snap is None:
        doc = ctx.store.get(SIGNALS, sid)  # already folded in: re-emit what was stored
        if not doc or "features" not in doc:
            return []
        return [Emit(keys.feat_stream(sym), FeaturesComputed(signal_id=sid, t0=doc["t0"], symbol=sym,
                                                             features=doc["features"], flags=doc.get("flags", {}),
                                                             prev=doc.get("prev") or {}),
                     sid, event_time=doc["t0"])]
    rev = ctx.config.rev if ctx.config is not None else 0
    write_signal(ctx.store, signal_doc(snap, sid, rev, "stream", ctx.now_ms()))
    touched(ctx, sym)
    out = [Emit(keys.feat_stream(sym), FeaturesComputed(signal_id=sid, t0=snap.t0, symbol=sym,
                                                        features=snap.features, flags=snap.flags, prev=snap.prev),
                sid, event_time=snap.t0)]
    if not ctx.services.get("s2.regime_armed"):
        # Once per worker: (re)arm tomorrow's regime tick. Every replica arms the same timer key,
        # so the runtime keeps one timer.
        ctx.services["s2.regime_armed"] = True
        out.append(arm_regime_timer(ctx, after_ms=ctx.now_ms()))
    return out


def on_book(env: Envelope, ctx: Context) -> list[Emit]:
    p: BookTicker | DepthLevels = env.payload
    if p.market != "perp":
        return []
    engine = load_engine(ctx, p.symbol, feature_config(ctx), check=False)
    try:
        if isinstance(p, DepthLevels):
            engine.state.depth_seen = True
            engine.on_book(p.ts, p.bids, p.asks)
        elif not engine.state.depth_seen:  # with a depth stream, book features come from it
            engine.on_book(p.ts, [(p.bid, p.bid_qty)], [(p.ask, p.ask_qty)])
        else:
            return []
    except ValueError as exc:
        raise PermanentError(f"bad book {p.symbol}: {exc}") from None
    touched(ctx, p.symbol)
    return []


def on_mark(env: Envelope, ctx: Context) -> list[Emit]:
    p: MarkPrice = env.payload
    if p.funding_rate is None:
        return []
    engine = load_engine(ctx, p.symbol, feature_config(ctx), check=False)
    s = engine.state
    if s.next_funding_time and p.next_funding_time > s.next_funding_time and s.funding_predicted is not None:
        # The settlement at the previous T happened: its last estimate is the settled rate.
        engine.on_funding(s.next_funding_time, rate=s.funding_predicted)
    engine.on_funding(p.ts, predicted=float(p.funding_rate), next_funding_time=p.next_funding_time or None)
    touched(ctx, p.symbol)
    return []


def on_funding(env: Envelope, ctx: Context) -> list[Emit]:
    p: FundingEvent = env.payload
    engine = load_engine(ctx, p.symbol, feature_config(ctx), check=False)
    if p.settled:
        engine.on_funding(p.funding_time, rate=float(p.rate))
    else:
        engine.on_funding(p.funding_time, predicted=float(p.rate))
    touched(ctx, p.symbol)
    return []


def ignore(env: Envelope, ctx: Context) -> list[Emit]:
    """Trades share the symbol's stream but are not features."""
    return []
