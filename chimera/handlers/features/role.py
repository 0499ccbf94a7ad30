"""S2 feature generator: the ordered (lease-owned) consumer of ``mkt:events:{perp}:<SYM>``.

Per symbol, in stream order:

* closed ``Kline`` (1m) → fold the rho reference's bars up to this minute (from the bar store,
  see ``bars.py``), ``FeatureEngine.on_bar``, upsert ``signals/<signal_id>`` (features, flags,
  t0, config_rev), emit ``FeaturesComputed`` on ``feat:events:<SYM>``.
  ``signal_id = "<SYM>-<bar open ms>"``: a redelivered bar rewrites the same document and the
  engine ignores it (it re-emits the stored features, in case the crash came between the state
  save and the XADD).
* ``BookTicker`` / ``DepthLevels`` → book features (once S1's depth levels arrive, bookTicker no
  longer overrides them); ``MarkPrice`` → predicted funding and minutes to funding; when the mark
  stream's next funding time moves on, the last predicted rate becomes the settled
  ``funding_rate``. Trades are not features. Nothing but a closed bar computes features.
* ``RecomputeFeatures`` / the daily regime ``TimerFired`` on ``feat:{commands}`` (also leased,
  so exactly one replica handles a command at a time): see ``recompute.py`` and ``regime.py``.

Engine state (``state_cache.py``): in memory per replica, written to ``feat:{cache}:<SYM>`` once
per read batch, before the batch is acked (``end_batch``); the first bar of a batch checks the
cache's seq and reloads when another replica wrote since.
"""

from __future__ import annotations

from typing import Any

from chimera.errors import PermanentError
from chimera.handlers.features.bars import MemoryBars
from chimera.handlers.features.engine import Bar, FeatureConfig, FeatureSnapshot
from chimera.handlers.features.state_cache import bar_source, end_batch, load_engine, touched
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import (
    BookTicker,
    DepthLevels,
    FeaturesComputed,
    FundingEvent,
    Kline,
    MarkPrice,
    RecomputeFeatures,
    TimerFired,
)
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context, HandlerSpec

DEFAULT_REFERENCE = "BTCUSDT"
REGIME_TIMER_NAME = "s2.regime"


def reference_symbol(settings: Any) -> str:
    extra = getattr(settings, "extra", None) or {}
    return str(extra.get("rho_reference", DEFAULT_REFERENCE)).upper()


def signal_id(symbol: str, open_time: int) -> str:
    return f"{symbol}-{open_time}"


DEFAULT_CONFIG = FeatureConfig()


def feature_config(ctx: Context) -> FeatureConfig:
    raw = ctx.config.get("features") if ctx.config is not None else None
    if not raw:
        return DEFAULT_CONFIG
    memo = ctx.services.get("s2.config")  # (rev, config): built once per config rev, not per event
    if memo is not None and memo[0] == ctx.config.rev:
        return memo[1]
    raw = dict(raw)
    if "rv_windows" in raw:
        raw["rv_windows"] = tuple(raw["rv_windows"])
    try:
        cfg = FeatureConfig(**raw)
    except TypeError as exc:
        raise PermanentError(f"config bundle 'features' is invalid: {exc}") from None
    ctx.services["s2.config"] = (ctx.config.rev, cfg)
    return cfg


# --- handlers ---------------------------------------------------------------------------------------


def signal_doc(snap: FeatureSnapshot, sid: str, config_rev: int, source: str, now_ms: int) -> dict:
    return {"signal_id": sid, "symbol": snap.symbol, "open_time": snap.open_time, "t0": snap.t0,
            "features": snap.features, "flags": snap.flags, "config_rev": config_rev,
            "features_source": source, "features_at": now_ms}


BAR_FEATURE_PREFIXES = ("atr", "rv_", "rho")


def is_bar_feature(name: str) -> bool:
    return name.startswith(BAR_FEATURE_PREFIXES)


def write_signal(store, doc: dict) -> None:
    """Create the signal or backfill its feature fields (S3 may have added its own fields).

    A recompute only knows klines: it replaces the bar features (atr, rv, rho) and keeps the
    book and funding features the stream had recorded.
    """
    sid = doc["signal_id"]
    if store.insert_if_absent("signals", sid, doc):
        return
    if doc.get("features_source") == "recompute":
        old = store.get("signals", sid) or {}
        kept = {k: v for k, v in (old.get("features") or {}).items() if not is_bar_feature(k)}
        feats, flags = dict(doc["features"]), dict(doc["flags"])
        for k, v in kept.items():
            feats[k] = v
            flags.pop(k, None)
            if k in (old.get("flags") or {}):
                flags[k] = old["flags"][k]
        doc = {**doc, "features": feats, "flags": flags}
    store.update_if("signals", sid, doc, {"signal_id": sid})


def on_kline(env: Envelope, ctx: Context, k: Kline) -> list[Emit]:
    cfg = feature_config(ctx)
    if not k.closed or k.close_time - k.open_time + 1 != cfg.bar_ms:
        return []  # a forming bar, or another interval
    sym = k.symbol
    ref = reference_symbol(ctx.settings)
    if ctx.redis is not None and "s2.recompute_window" not in ctx.services:
        from chimera.handlers.features.regime import ensure_scheduled

        ensure_scheduled(ctx)
    engine = load_engine(ctx, sym, cfg, check=True)
    source = bar_source(ctx)
    close = float(k.close)
    if isinstance(source, MemoryBars):
        source.add(sym, k.open_time, close)
    if sym == ref:
        engine.on_reference_bar(k.open_time, close)
    else:
        for t, c in source.closes(ref, engine.state.ref_last_open, k.open_time):
            engine.on_reference_bar(t, c)
    try:
        snap = engine.on_bar(Bar(k.open_time, float(k.open), float(k.high), float(k.low), close, float(k.volume)))
    except ValueError as exc:
        raise PermanentError(f"bad bar {sym} {k.open_time}: {exc}") from None
    sid = signal_id(sym, k.open_time)
    window = ctx.services.get("s2.recompute_window")  # (start, end) when run by a recompute
    if snap is None:
        if window is not None:
            return []
        doc = ctx.store.get("signals", sid)  # already folded in: re-emit what was stored
        if not doc or "features" not in doc:
            return []
        return [Emit(keys.feat_stream(sym), FeaturesComputed(signal_id=sid, t0=doc["t0"], symbol=sym,
                                                             features=doc["features"], flags=doc.get("flags", {})),
                     sid, event_time=doc["t0"])]
    rev = ctx.config.rev if ctx.config is not None else 0
    if window is not None:
        start, end = window
        if start <= k.open_time < end:
            write_signal(ctx.store, signal_doc(snap, sid, rev, "recompute", ctx.now_ms()))
            ctx.services["s2.recomputed"] = ctx.services.get("s2.recomputed", 0) + 1
        return []
    write_signal(ctx.store, signal_doc(snap, sid, rev, "stream", ctx.now_ms()))
    touched(ctx, sym)
    return [Emit(keys.feat_stream(sym), FeaturesComputed(signal_id=sid, t0=snap.t0, symbol=sym,
                                                         features=snap.features, flags=snap.flags),
                 sid, event_time=snap.t0)]


def on_book(ctx: Context, p: BookTicker | DepthLevels) -> None:
    cfg = feature_config(ctx)
    engine = load_engine(ctx, p.symbol, cfg, check=False)
    try:
        if isinstance(p, DepthLevels):
            engine.state.depth_seen = True
            engine.on_book(p.ts, p.bids, p.asks)
        elif not engine.state.depth_seen:  # with a depth stream, book features come from it
            engine.on_book(p.ts, [(p.bid, p.bid_qty)], [(p.ask, p.ask_qty)])
        else:
            return
    except ValueError as exc:
        raise PermanentError(f"bad book {p.symbol}: {exc}") from None
    touched(ctx, p.symbol)


def on_mark(ctx: Context, p: MarkPrice) -> None:
    if p.funding_rate is None:
        return
    cfg = feature_config(ctx)
    engine = load_engine(ctx, p.symbol, cfg, check=False)
    s = engine.state
    if s.next_funding_time and p.next_funding_time > s.next_funding_time and s.funding_predicted is not None:
        # The settlement at the previous T happened: its last estimate is the settled rate.
        engine.on_funding(s.next_funding_time, rate=s.funding_predicted)
    engine.on_funding(p.ts, predicted=float(p.funding_rate), next_funding_time=p.next_funding_time or None)
    touched(ctx, p.symbol)


def on_funding(ctx: Context, p: FundingEvent) -> None:
    engine = load_engine(ctx, p.symbol, feature_config(ctx), check=False)
    if p.settled:
        engine.on_funding(p.funding_time, rate=float(p.rate))
    else:
        engine.on_funding(p.funding_time, predicted=float(p.rate))
    touched(ctx, p.symbol)


def handle(env: Envelope, ctx: Context) -> list[Emit]:
    p = env.payload
    if isinstance(p, Kline):
        return on_kline(env, ctx, p)
    if isinstance(p, BookTicker | DepthLevels):
        if p.market == "perp":
            on_book(ctx, p)
        return []
    if isinstance(p, MarkPrice):
        on_mark(ctx, p)
        return []
    if isinstance(p, FundingEvent):
        on_funding(ctx, p)
        return []
    if isinstance(p, RecomputeFeatures):
        from chimera.handlers.features.recompute import handle_recompute

        return handle_recompute(env, ctx, p)
    if isinstance(p, TimerFired) and p.name == REGIME_TIMER_NAME:
        from chimera.handlers.features.regime import handle_regime

        return handle_regime(env, ctx, p)
    return []  # trades and other market events: not features (yet)


def streams(settings: Any) -> list[str]:
    syms = list(getattr(settings, "symbols", ()) or ())
    return [keys.mkt_stream("perp", s) for s in syms] + [keys.FEAT_COMMANDS]


SPEC = HandlerSpec(
    role="s2",
    handle=handle,
    streams=streams,
    # No runtime idempotency marks: one Redis key per book tick would cost more than the work.
    # The engine ignores bars it has folded in, and commands are idempotent upserts.
    idempotency=None,
    ordered=True,
    end_batch=end_batch,
    description="S2 feature generator: per-symbol features from market events, recompute, daily regime",
)
