"""What every S2 leaf module shares: the bundle's feature config, the reference symbol, signal ids
and the ``signals`` document write. Imports no S2 handler module, so none imports another."""

from __future__ import annotations

from typing import Any

from chimera.errors import PermanentError
from chimera.handlers.features.engine import FeatureConfig, FeatureSnapshot
from chimera.store.collections import SIGNALS
from chimera.workers.handler import Context

DEFAULT_REFERENCE = "BTCUSDT"
REGIME_TIMER_NAME = "s2.regime"
DEFAULT_CONFIG = FeatureConfig()
BAR_FEATURE_PREFIXES = ("atr", "rv_", "rho", "sma_")


def extra(ctx: Context) -> dict:
    return getattr(ctx.settings, "extra", None) or {}


def reference_symbol(settings: Any) -> str:
    ex = getattr(settings, "extra", None) or {}
    return str(ex.get("rho_reference", DEFAULT_REFERENCE)).upper()


def signal_id(symbol: str, open_time: int) -> str:
    return f"{symbol}-{open_time}"


def feature_config(ctx: Context) -> FeatureConfig:
    raw = ctx.config.get("features") if ctx.config is not None else None
    if not raw:
        return DEFAULT_CONFIG
    memo = ctx.services.get("s2.config")  # (rev, config): built once per config rev, not per event
    if memo is not None and memo[0] == ctx.config.rev:
        return memo[1]
    raw = dict(raw)
    for name in ("rv_windows", "sma_windows"):
        if name in raw:
            raw[name] = tuple(raw[name])
    try:
        cfg = FeatureConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"config bundle 'features' is invalid: {exc}") from None
    ctx.services["s2.config"] = (ctx.config.rev, cfg)
    return cfg


def signal_doc(snap: FeatureSnapshot, sid: str, config_rev: int, source: str, now_ms: int) -> dict:
    return {"signal_id": sid, "symbol": snap.symbol, "open_time": snap.open_time, "t0": snap.t0,
            "features": snap.features, "flags": snap.flags, "prev": snap.prev, "config_rev": config_rev,
            "features_source": source, "features_at": now_ms}


def is_bar_feature(name: str) -> bool:
    return name.startswith(BAR_FEATURE_PREFIXES)


def write_signal(store, doc: dict) -> None:
    """Create the signal or backfill its feature fields (S3 may have added its own fields).

    A recompute only knows klines: it replaces the bar features (atr, rv, rho, sma) and keeps the
    book and funding features the stream had recorded.
    """
    sid = doc["signal_id"]
    if store.insert_if_absent(SIGNALS, sid, doc):
        return
    if doc.get("features_source") == "recompute":
        old = store.get(SIGNALS, sid) or {}
        kept = {k: v for k, v in (old.get("features") or {}).items() if not is_bar_feature(k)}
        feats, flags = dict(doc["features"]), dict(doc["flags"])
        for k, v in kept.items():
            feats[k] = v
            flags.pop(k, None)
            if k in (old.get("flags") or {}):
                flags[k] = old["flags"][k]
        doc = {**doc, "features": feats, "flags": flags}
    store.update_if(SIGNALS, sid, doc, {"signal_id": sid})
