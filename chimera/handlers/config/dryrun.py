"""Dry-run: the stored signals of the last N days decided again by S3 in-process, once with the
candidate bundle and once with the active one, and the difference of the two decision sets.

Each signal is decided on its own (the budget reservation of an open is given back at once and no
S6 runs), so the diff isolates what the bundle changes (guards, entry conditions, rules, sizing)
from the path-dependence of budget and open positions. Regime and health are "not known" in both
runs (the bundle's ``when_missing`` applies), so they cannot differ between the two either.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chimera.handlers.strategy.dsl import time_fields
from chimera.handlers.strategy.dsl_expr import PREV
from chimera.handlers.strategy.role import SPEC as S3
from chimera.ops.settings import Settings
from chimera.schemas.documents.config import DryRunDiff
from chimera.schemas.messages import FeaturesComputed
from chimera.store import open_store
from chimera.store.collections import SIGNALS
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.config import activate
from chimera.workers.inprocess import InProcessRuntime

DAY_MS = 86_400_000
MAX_SIGNALS = 20_000


@dataclass(frozen=True)
class StoredSignal:
    signal_id: str
    symbol: str
    t0: int
    features: dict
    prev: dict


def stored_signals(store, *, now_ms: int, days: float, limit: int = MAX_SIGNALS) -> list[StoredSignal]:
    """The newest ``limit`` signals with ``t0`` in the last ``days`` days, oldest first."""
    since = int(now_ms - days * DAY_MS)
    rows = store.query(SIGNALS, {"t0": (">=", since)}, order_by="t0", desc=True, limit=limit)
    out = [StoredSignal(str(d.get("signal_id") or d["_key"]), str(d["symbol"]), int(d["t0"]),
                        dict(d.get("features") or {}), dict(d.get("prev") or {}))
           for d in rows if d.get("symbol") and d.get("t0") is not None and isinstance(d.get("features"), dict)]
    out.reverse()
    return [s for s in out if s.t0 < now_ms]


def decide_all(body: Mapping, signals: Sequence[StoredSignal], *, bundle_id: str = "dryrun",
               rev: int = 1) -> dict[str, dict]:
    """signal_id → S3's DecisionRecord (as a dict) for ``body``, each signal decided on its own."""
    # S3 caches a compiled strategy per (bundle_id, rev) for the process: a body's own hash in the id keeps
    # the candidate, the active bundle and every perturbed copy apart.
    bundle_id = f"{bundle_id}#{hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]}"
    store = open_store("sqlite://:memory:")
    activate(store, bundle_id, rev, dict(body))
    symbols = tuple(sorted({s.symbol for s in signals}))
    clock = ManualClock(signals[0].t0 - 1 if signals else 0)
    rt = InProcessRuntime([S3], store=store, settings=Settings(symbols=symbols), clock=clock)
    out: dict[str, dict] = {}
    for s in signals:
        feats = {k: v for k, v in s.features.items() if v is None or isinstance(v, int | float)}
        prev = {k: v for k, v in s.prev.items() if v is None or isinstance(v, int | float)}
        rt.publish(keys.feat_stream(s.symbol), FeaturesComputed(signal_id=s.signal_id, t0=s.t0, symbol=s.symbol,
                                                                features=feats, prev=prev),
                   idempotency_key=s.signal_id, event_time=s.t0)
        rt.run()
        doc = store.get(SIGNALS, s.signal_id) or {}
        d = doc.get("decision") or {"action": "skip", "reason": "NOT_DECIDED"}
        out[s.signal_id] = d
        if d.get("action") == "open" and d.get("pos_id"):
            rt.ports.risk.release(d["pos_id"], s.symbol)
    return out


def rule_context(sig: StoredSignal, decision: Mapping) -> dict | None:
    """The context S3's rules saw for a sided decision (None when no side was chosen)."""
    side = decision.get("side")
    if not side:
        return None
    return {**sig.features, **time_fields(sig.t0), "regime": decision.get("regime") or None,
            "side": "LONG" if side == "BUY" else "SHORT", PREV: sig.prev}


def diff(active: Mapping[str, dict], candidate: Mapping[str, dict], *, active_ref: str = "",
         window: tuple[int, int] = (0, 0)) -> DryRunDiff:
    ids = sorted(set(active) | set(candidate))
    skip = {"action": "skip"}
    flipped = [i for i in ids if (active.get(i, skip).get("action"), active.get(i, skip).get("side"))
               != (candidate.get(i, skip).get("action"), candidate.get(i, skip).get("side"))]
    opens_a = {i for i in ids if active.get(i, skip).get("action") == "open"}
    opens_c = {i for i in ids if candidate.get(i, skip).get("action") == "open"}
    union = opens_a | opens_c
    fires = Counter(r for d in candidate.values() for r in d.get("fired") or ())
    n = len(ids)
    return DryRunDiff(
        signals=n, window_from_ms=window[0], window_to_ms=window[1], active=active_ref,
        opens_active=len(opens_a), opens_candidate=len(opens_c), delta_trades=len(opens_c) - len(opens_a),
        decisions_flipped=len(flipped), flipped_pct=round(len(flipped) / n, 6) if n else 0.0,
        jaccard_opens=round(len(opens_a & opens_c) / len(union), 6) if union else 1.0,
        override_rate_active=override_rate(active.values()), override_rate_candidate=override_rate(candidate.values()),
        rule_fire_counts=dict(sorted(fires.items())), flipped_ids=flipped[:50])


def override_rate(decisions) -> float:
    """Share of the decisions that had a side (an entry condition held) in which any rule fired."""
    sided = [d for d in decisions if d.get("side")]
    return round(sum(1 for d in sided if d.get("fired")) / len(sided), 6) if sided else 0.0
