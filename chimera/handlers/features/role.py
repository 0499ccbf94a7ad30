"""S2 feature generator: the ordered (lease-owned) consumer of ``mkt:events:{perp}:<SYM>``.

Per symbol, in stream order:

* closed ``Kline`` (1m) → fold the rho reference's bars up to this minute (from the bar store,
  see ``bars.py``), ``FeatureEngine.on_bar``, upsert ``signals/<signal_id>`` (features, flags,
  t0, config_rev), save the engine state to ``feat:{cache}:<SYM>``, emit ``FeaturesComputed`` on
  ``feat:events:<SYM>``. ``signal_id = "<SYM>-<bar open ms>"``: a redelivered bar rewrites the same
  document and the engine ignores it (it re-emits the stored features, in case the crash came
  between the state save and the XADD).
* ``BookTicker`` / ``DepthLevels`` → book features; ``MarkPrice`` → predicted funding and
  minutes to funding; when the mark stream's next funding time moves on, the last predicted rate
  becomes the settled ``funding_rate``. These only change the in-memory engine (saved with the
  next bar) so a 1 s mark stream costs no Redis write.
* ``RecomputeFeatures`` / the daily regime ``TimerFired`` on ``feat:{commands}`` (also leased,
  so exactly one replica handles a command at a time): see ``recompute.py`` and ``regime.py``.

Engine state: each replica keeps its engines in memory and checks the cache's sequence number
on every bar; if another replica wrote since (the lease moved away and back), it reloads. With
``ctx.redis`` None (the in-process runtime) the state lives in ``ctx.services`` only.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from chimera.handlers.features.bars import MemoryBars, RedisBars
from chimera.handlers.features.engine import Bar, FeatureConfig, FeatureEngine, FeatureSnapshot
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
from chimera.workers.errors import PermanentError
from chimera.workers.handler import Context, HandlerSpec

DEFAULT_REFERENCE = "BTCUSDT"
REGIME_TIMER_NAME = "s2.regime"


def reference_symbol(settings: Any) -> str:
    extra = getattr(settings, "extra", None) or {}
    return str(extra.get("rho_reference", DEFAULT_REFERENCE)).upper()


def signal_id(symbol: str, open_time: int) -> str:
    return f"{symbol}-{open_time}"


def feature_config(ctx: Context) -> FeatureConfig:
    raw = ctx.config.get("features") if ctx.config is not None else None
    if not raw:
        return FeatureConfig()
    raw = dict(raw)
    if "rv_windows" in raw:
        raw["rv_windows"] = tuple(raw["rv_windows"])
    try:
        return FeatureConfig(**raw)
    except TypeError as exc:
        raise PermanentError(f"config bundle 'features' is invalid: {exc}") from None


# --- engine cache --------------------------------------------------------------------------------


def _engines(ctx: Context) -> dict[str, list]:
    return ctx.services.setdefault("s2.engines", {})  # symbol -> [engine, seq]


def load_engine(ctx: Context, symbol: str, cfg: FeatureConfig, check: bool) -> FeatureEngine:
    mem = _engines(ctx)
    held = mem.get(symbol)
    if ctx.redis is None:
        if held is None or held[0].cfg != cfg:
            held = mem[symbol] = [FeatureEngine.new(symbol, cfg), 0]
        return held[0]
    if held is not None and not check and held[0].cfg == cfg:
        return held[0]
    seq_raw = ctx.redis.get(keys.feat_cache_seq(symbol))
    seq = int(seq_raw) if seq_raw else 0
    if held is not None and held[1] == seq and held[0].cfg == cfg:
        return held[0]
    blob = ctx.redis.get(keys.feat_cache(symbol)) if seq else None
    engine = None
    if blob:
        try:
            engine = FeatureEngine.from_bytes(blob, cfg)
        except ValueError as exc:  # another config or state version: start cold, say so
            logger.warning("s2 {}: cached state not usable ({}); starting cold", symbol, exc)
    if engine is None:
        engine = FeatureEngine.new(symbol, cfg)
    mem[symbol] = [engine, seq]
    return engine


def save_engine(ctx: Context, symbol: str, engine: FeatureEngine) -> None:
    mem = _engines(ctx)
    if ctx.redis is None:
        mem[symbol] = [engine, 0]
        return
    pipe = ctx.redis.pipeline(transaction=True)  # both keys share the {cache} slot
    pipe.set(keys.feat_cache(symbol), engine.to_bytes())
    pipe.incr(keys.feat_cache_seq(symbol))
    _, seq = pipe.execute()
    mem[symbol] = [engine, int(seq)]


def _bar_source(ctx: Context):
    if ctx.redis is not None:
        return RedisBars(ctx.redis)
    return ctx.services.setdefault("s2.bars", MemoryBars())


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
    source = _bar_source(ctx)
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
        save_engine(ctx, sym, engine)
        return []
    write_signal(ctx.store, signal_doc(snap, sid, rev, "stream", ctx.now_ms()))
    save_engine(ctx, sym, engine)
    return [Emit(keys.feat_stream(sym), FeaturesComputed(signal_id=sid, t0=snap.t0, symbol=sym,
                                                         features=snap.features, flags=snap.flags),
                 sid, event_time=snap.t0)]


def _depth_seen(ctx: Context) -> set[str]:
    return ctx.services.setdefault("s2.depth_seen", set())


def on_book(ctx: Context, p: BookTicker | DepthLevels) -> None:
    cfg = feature_config(ctx)
    engine = load_engine(ctx, p.symbol, cfg, check=False)
    try:
        if isinstance(p, DepthLevels):
            _depth_seen(ctx).add(p.symbol)
            engine.on_book(p.ts, p.bids, p.asks)
        elif p.symbol not in _depth_seen(ctx):  # with a depth stream, depth features come from it
            engine.on_book(p.ts, [(p.bid, p.bid_qty)], [(p.ask, p.ask_qty)])
    except ValueError as exc:
        raise PermanentError(f"bad book {p.symbol}: {exc}") from None


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


def on_funding(ctx: Context, p: FundingEvent) -> None:
    engine = load_engine(ctx, p.symbol, feature_config(ctx), check=False)
    if p.settled:
        engine.on_funding(p.funding_time, rate=float(p.rate))
    else:
        engine.on_funding(p.funding_time, predicted=float(p.rate))


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
    description="S2 feature generator: per-symbol features from market events, recompute, daily regime",
)
