"""B10 cost curve: fit ``slip_bps = g(spread, depth, vol, regime)`` from S4's fills and carry it in a
draft bundle's ``router.curves``; S4 turns the active bundle's curve into its maker wait and taker
share with ``router_params`` (a pure function).

Model (one row per taker fill with the book at send, joined to its intent's signal)::

    slip_bps = b0 + b_spread * spread_bp + b_depth * size_to_depth + b_vol * vol_bp
               + b_EXTREME * [regime == EXTREME] + b_FROZEN * [regime == FROZEN]

``spread_bp`` and ``size_to_depth`` as S11's monthly fit computes them (``health.costfit.row``);
``vol_bp`` = the signal's ``atr_pct`` in bps; regime from the decision (NORMAL is the baseline). OLS by
default, a quantile regression (``quantile=0.9``: the slippage S4 should plan for) on request;
statsmodels does both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from chimera.errors import PermanentError
from chimera.handlers.health.costfit import row as book_row
from chimera.store.collections import FILLS, ORDER_INTENTS, SIGNALS

TERMS = ("const", "spread_bp", "size_to_depth", "vol_bp", "regime_EXTREME", "regime_FROZEN")
MIN_SAMPLES = 30
MODEL = ("slip_bps = const + spread_bp*b + size_to_depth*b + vol_bp*b + regime_EXTREME*b + regime_FROZEN*b "
         "(NORMAL baseline)")
# S4's policy defaults (overridable in router.curves.policy): wait longer for a maker fill when the
# taker would slip more, and send less of the order as taker.
POLICY = {"wait_ms_per_bp": 500.0, "min_wait_ms": 500.0, "max_wait_ms": 15_000.0, "taker_cap_bps": 10.0}


def rows_from_store(store, from_ms: int, to_ms: int) -> list[tuple[float, ...]]:
    """(spread_bp, size_to_depth, vol_bp, extreme, frozen, slip_bps) per usable taker fill of [from, to)."""
    out = []
    intents: dict[str, dict | None] = {}
    for f in store.query(FILLS, {"ts": (">=", from_ms)}):
        if f.get("ts", 0) >= to_ms:
            continue
        book = book_row(f)
        if book is None:
            continue
        iid = f.get("intent_id", "")
        if iid not in intents:
            it = store.get(ORDER_INTENTS, iid) or {}
            intents[iid] = store.get(SIGNALS, it.get("signal_id", "")) if it.get("signal_id") else None
        sig = intents[iid]
        atr_pct = ((sig or {}).get("features") or {}).get("atr_pct")
        if not isinstance(atr_pct, int | float) or math.isnan(atr_pct):
            continue
        regime = (((sig or {}).get("decision") or {}).get("regime") or "NORMAL").upper()
        spread, depth, slip = book
        out.append((spread, depth, float(atr_pct) * 10_000, float(regime == "EXTREME"), float(regime == "FROZEN"), slip))
    return out


def fit(rows: list[tuple[float, ...]], quantile: float | None = None) -> dict:
    """Coefficients by term, n, R² (OLS) or pseudo-R² (quantile); a regime never seen gets no term."""
    if len(rows) < MIN_SAMPLES:
        raise PermanentError(f"{len(rows)} usable taker fills < {MIN_SAMPLES}: not enough to fit a cost curve")
    try:
        import numpy as np
        import statsmodels.api as sm
    except ImportError as exc:  # pragma: no cover - statsmodels ships with the dev extra
        raise PermanentError("the cost-curve fit needs statsmodels (pip install statsmodels)") from exc
    data = np.array(rows, dtype=float)
    y = data[:, -1]
    cols = [0, 1, 2] + [i for i in (3, 4) if data[:, i].any()]
    x = sm.add_constant(data[:, cols], has_constant="add")
    names = ["const", *(TERMS[i + 1] for i in cols)]
    if quantile is None:
        res = sm.OLS(y, x).fit()
        quality = {"r2": float(res.rsquared), "method": "OLS"}
    else:
        if not 0 < quantile < 1:
            raise PermanentError(f"quantile {quantile}: give a value in (0, 1), e.g. 0.9")
        res = sm.QuantReg(y, x).fit(q=quantile)
        quality = {"pseudo_r2": float(res.prsquared), "method": f"QuantReg q={quantile}"}
    coef = {name: float(v) for name, v in zip(names, res.params, strict=True)}
    return {"model": MODEL, "coef": {t: coef.get(t, 0.0) for t in TERMS}, "n": len(rows), **quality}


def predict_slip_bps(curves: Mapping[str, Any], *, spread_bp: float, size_to_depth: float, vol_bp: float,
                     regime: str = "NORMAL") -> float:
    c = curves["coef"]
    regime = regime.upper()
    return (c["const"] + c["spread_bp"] * spread_bp + c["size_to_depth"] * size_to_depth + c["vol_bp"] * vol_bp
            + c["regime_EXTREME"] * (regime == "EXTREME") + c["regime_FROZEN"] * (regime == "FROZEN"))


def router_params(curves: Mapping[str, Any] | None, *, spread_bp: float, size_to_depth: float, vol_bp: float,
                  regime: str = "NORMAL", default_wait_ms: int = 3000) -> tuple[int, float]:
    """(maker_wait_ms, taker_share) for one order from the active bundle's ``router.curves``.

    No curve: (default_wait_ms, 0.0), i.e. S4's current behaviour (all maker first, then taker).
    Otherwise, with s = the predicted taker slippage (floored at 0): wait ``wait_ms_per_bp * s`` within
    [min_wait_ms, max_wait_ms] and send ``1 - s / taker_cap_bps`` (within [0, 1]) of the order as taker now.
    """
    if not curves or "coef" not in curves:
        return default_wait_ms, 0.0
    pol = {**POLICY, **(curves.get("policy") or {})}
    s = predict_slip_bps(curves, spread_bp=spread_bp, size_to_depth=size_to_depth, vol_bp=vol_bp, regime=regime)
    s = max(0.0, s) if math.isfinite(s) else pol["taker_cap_bps"]
    wait = min(max(pol["wait_ms_per_bp"] * s, pol["min_wait_ms"]), pol["max_wait_ms"])
    share = min(max(1.0 - s / pol["taker_cap_bps"], 0.0), 1.0)
    return int(wait), round(share, 6)


def draft_bundle(store, fitted: dict, *, now_ms: int, by: str = "s10", source: str = "costfit") -> Any:
    """A new rev of the active bundle with ``router.curves`` = the fit: a DRAFT for simulate and promote."""
    from chimera.handlers.config import service

    ref, body = service.active_body(store)
    if not body:
        raise PermanentError("no active bundle to carry the cost curve (activate one first)")
    bundle_id = ref.rsplit(":", 1)[0]
    router = dict(body.get("router") or {})
    router["curves"] = {**fitted, "fitted_at": now_ms}
    draft = {k: v for k, v in body.items() if k != "rev"}
    draft.update(bundle_id=bundle_id, router=router)
    return service.create(store, draft, now_ms=now_ms, by=by, source=source)


# --- the monthly job (s10's own timer on cfg:{commands}) ---------------------------------------------

TIMER = "s10.costfit"


def arm(due_ms: int):
    from chimera.schemas.messages import TimerFired
    from chimera.streams import keys
    from chimera.streams.producer import Emit

    return Emit(keys.CFG_COMMANDS, TimerFired(name=TIMER, due_ms=due_ms), f"{TIMER}:{due_ms}", due_ms=due_ms,
                timer_key=TIMER)


def on_start(ctx) -> list:
    from chimera.handlers.health.costfit import month_start

    return [arm(month_start(ctx.now_ms(), 1))]


def on_timer(ctx, due_ms: int) -> list:
    """Fit the month before ``due_ms`` into a draft bundle (too few fills: nothing), arm next month."""
    from loguru import logger

    from chimera.handlers.health.costfit import month_start

    start = month_start(due_ms - 1)
    try:
        draft = draft_bundle(ctx.store, fit(rows_from_store(ctx.store, start, due_ms)), now_ms=ctx.now_ms(),
                             source=f"costfit:{start}")
        logger.info("cost curve fitted into draft bundle {}:{}", draft.bundle_id, draft.rev)
    except PermanentError as exc:  # too few fills or nothing active: next month tries again
        logger.info("cost curve not fitted for the month from {}: {}", start, exc)
    return [arm(month_start(due_ms, 1))]
