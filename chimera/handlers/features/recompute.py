"""Feature recompute (``RecomputeFeatures`` on ``feat:{commands}``): S2's bar folding, run by
the in-process runtime (its memory ports) over klines of a period, backfills ``signals.features``.

Klines come from ``ctx.venues.klines``: the venue's REST (``/fapi/v1/klines`` through the
official SDK, the venue given by ``settings.venue_url``) unless the context's ``Venues`` was given
a source (``Venues(klines=...)``: ``(symbol, start_ms, end_ms) -> list[Kline]``; tests use that).
Warm-up: bars from ``start - recompute_warmup_bars`` (default 1000) are folded in but only
bars with ``start <= open_time < end`` are written. Rolling windows (rv, rho) are then exact;
Wilder's ATR forgets its start as (13/14)^n, below 1e-30 after 1000 bars, so a recompute equals
the streamed values whenever the stream itself had that much history (or both start at the
same first bar).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from loguru import logger

from chimera.errors import PermanentError
from chimera.handlers.features.market import fold_kline, is_closed_bar
from chimera.handlers.features.toolkit import (
    extra,
    feature_config,
    reference_symbol,
    signal_doc,
    signal_id,
    write_signal,
)
from chimera.ports.wiring import memory_ports
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Kline, OpsEvent, RecomputeFeatures
from chimera.store.collections import STRATEGY_EVENTS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.clock import ManualClock
from chimera.workers.handler import Context, HandlerSpec, Route
from chimera.workers.inprocess import InProcessRuntime

DEFAULT_WARMUP_BARS = 1000


class _Window:
    """The recompute's Kline handler: every bar is folded in, only those in ``[start, end)`` written."""

    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.start_ms, self.end_ms, self.written = start_ms, end_ms, 0

    def __call__(self, env: Envelope, ctx: Context) -> list[Emit]:
        k: Kline = env.payload
        cfg = feature_config(ctx)
        if not is_closed_bar(k, cfg):
            return []
        snap = fold_kline(ctx, k, cfg)
        if snap is not None and self.start_ms <= k.open_time < self.end_ms:
            rev = ctx.config.rev if ctx.config is not None else 0
            write_signal(ctx.store, signal_doc(snap, signal_id(k.symbol, k.open_time), rev, "recompute", ctx.now_ms()))
            self.written += 1
        return []


def recompute(ctx: Context, symbol: str, start_ms: int, end_ms: int, *, warmup_bars: int | None = None) -> dict:
    """Run S2's bar folding in-process over [start - warmup, end); backfill signals. Returns a summary."""
    if end_ms <= start_ms:
        raise PermanentError(f"recompute {symbol}: empty period [{start_ms}, {end_ms})")
    cfg = feature_config(ctx)
    ex = extra(ctx)
    warm = warmup_bars if warmup_bars is not None else int(ex.get("recompute_warmup_bars", DEFAULT_WARMUP_BARS))
    ref = reference_symbol(ctx.settings)
    load = ctx.venues.klines
    lo = start_ms - warm * cfg.bar_ms
    own = load(symbol, lo, end_ms)
    ref_bars = load(ref, lo - cfg.rho_window * cfg.bar_ms, end_ms) if symbol != ref else []
    syms = (symbol,) if symbol == ref else (ref, symbol)
    try:
        settings = replace(ctx.settings, symbols=syms)
    except TypeError:
        settings = SimpleNamespace(symbols=syms, extra=ex)
    window = _Window(start_ms, end_ms)
    spec = HandlerSpec(role="s2-recompute", routes={Kline: Route(window, idem=None)},
                       streams=lambda s: [keys.mkt_stream("perp", symbol)], ordered=True)
    clock = ManualClock()
    ports = memory_ports(clock, settings)
    rt = InProcessRuntime([spec], store=ctx.store, settings=settings, clock=clock, ports=ports)
    if ctx.config is not None:
        rt.config = ctx.config  # the same config rev as the command's
    # Reference bars go to the bar store directly (the reference symbol's own signals are not
    # part of this recompute); the symbol's bars go through the handler, in order.
    for k in ref_bars:
        ports.features.bar_closed(ref, k.open_time, float(k.close))
    for k in own:
        rt.publish(keys.mkt_stream("perp", symbol), k, f"recompute:{symbol}:{k.open_time}", event_time=k.close_time)
    rt.run()
    if rt.dead:
        raise PermanentError(f"recompute {symbol}: {len(rt.dead)} bar(s) failed: {rt.dead[0][2]}")
    return {"symbol": symbol, "start_ms": start_ms, "end_ms": end_ms, "bars_loaded": len(own),
            "reference_bars": len(ref_bars), "signals_written": window.written, "warmup_bars": warm,
            "config_rev": rt.config.rev}


def handle_recompute(env: Envelope, ctx: Context) -> list[Emit]:
    cmd: RecomputeFeatures = env.payload
    summary = recompute(ctx, cmd.symbol, cmd.start_ms, cmd.end_ms)
    key = f"FEATURE_RECOMPUTE:{cmd.symbol}:{cmd.start_ms}:{cmd.end_ms}:{env.idempotency_key}"
    ctx.store.upsert(STRATEGY_EVENTS, key, {"kind": "FEATURE_RECOMPUTE", "at": ctx.now_ms(),
                                            "requested_by": env.correlation_id, **summary})
    logger.info("s2 recompute {}: {}", cmd.symbol, summary)
    return [Emit(keys.OPS_EVENTS, OpsEvent(kind="FEATURE_RECOMPUTE", actor=ctx.consumer or "s2",
                                           detail={k: str(v) for k, v in summary.items()}), key)]
