"""L2 model gate: p(win) from a model in the ObjectStore, mapped to a size multiplier.

The model is any object with ``predict_proba`` (e.g. a joblib-dumped scikit-learn
LogisticRegression); class 1 is "take the trade". It runs in a daemon thread with a hard
deadline so a slow or hung model can never stall the decision loop. Fallback, documented in
docs/strategy.md: on timeout or error the decision records ``model_status`` and ``model_p=None``
and either trades at ``fallback_size_mult`` (on_timeout="reduce") or skips (on_timeout="skip").
A thread that overran is abandoned, not killed: Python cannot kill threads, and it is daemonic.
"""

from __future__ import annotations

import io
import math
import pickle
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from chimera.handlers.strategy.bundle import ModelSpec

_MODELS: dict[tuple[str, str, int], object] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelResult:
    status: str  # ok | timeout | error | missing_features
    p: float | None
    size_mult: float
    skip: bool
    detail: str = ""


def load_model(objects, key: str, bundle_id: str, rev: int):
    """Unpickle once per (key, bundle rev); a new rev reloads, so a retrained model ships with a rev."""
    cache_key = (key, bundle_id, rev)
    with _LOCK:
        if cache_key in _MODELS:
            return _MODELS[cache_key]
    data = objects.get(key)
    try:
        import joblib  # optional: joblib dumps need it, plain pickles do not

        model = joblib.load(io.BytesIO(data))
    except ImportError:
        model = pickle.loads(data)  # trusted: models come from our own ObjectStore
    with _LOCK:
        _MODELS[cache_key] = model
    return model


def curve_mult(curve: tuple[tuple[float, float], ...], p: float) -> float:
    """Piecewise-linear through the points, flat outside them."""
    if p <= curve[0][0]:
        return curve[0][1]
    for (p0, v0), (p1, v1) in zip(curve, curve[1:], strict=False):
        if p <= p1:
            return v0 if p1 == p0 else v0 + (v1 - v0) * (p - p0) / (p1 - p0)
    return curve[-1][1]


def _fallback(spec: ModelSpec, status: str, detail: str) -> ModelResult:
    skip = spec.on_timeout == "skip"
    return ModelResult(status, None, 0.0 if skip else spec.fallback_size_mult, skip, detail)


def evaluate(spec: ModelSpec, model, features: Mapping[str, float | None]) -> ModelResult:
    row = []
    for name in spec.features:
        v = features.get(name)
        if v is None or not isinstance(v, int | float) or not math.isfinite(v):
            return _fallback(spec, "missing_features", name)
        row.append(float(v))
    out: dict = {}

    def run() -> None:
        try:
            out["p"] = float(model.predict_proba([row])[0][1])
        except Exception as exc:  # the model is foreign code: any failure is a fallback
            out["error"] = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=run, name="s3-model", daemon=True)
    t.start()
    t.join(spec.timeout_ms / 1000)
    if t.is_alive():
        return _fallback(spec, "timeout", f"no answer within {spec.timeout_ms} ms")
    if "error" in out or not math.isfinite(out.get("p", math.nan)):
        return _fallback(spec, "error", out.get("error", "non-finite p"))
    p = out["p"]
    mult = curve_mult(spec.curve, p)
    return ModelResult("ok", p, mult, mult <= 0.0)
