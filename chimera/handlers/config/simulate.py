"""Simulate: candidate vs active in-process backtests on the same data window (KPI table side by
side), then the candidate's sensitivity on the signals that window produced.

Sensitivity: each numeric parameter (``params.py``) is moved by ±ε (relative) and every signal of the
window is decided again by S3. ``flip_pct`` is the share of decisions whose action or side changed
(the larger of the two moves); the Lipschitz estimate is ``max |ΔKPI| / |Δparam|`` with KPI = the
number of entries opened (``lipschitz_rel`` the same in relative terms: %KPI per %param).
``robustness`` = 1 - the largest flip_pct. With more than ``MORRIS_ABOVE`` parameters a Morris
screening (SALib) ranks them by mu* over the ±ε box as well.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from chimera.errors import PermanentError
from chimera.handlers.config import dryrun, params, service
from chimera.handlers.strategy.dsl import ACTIONS
from chimera.store.collections import SIGNALS, SIMULATIONS

DEFAULT_EPS = 0.05
MORRIS_ABOVE = 8
MORRIS_TRAJECTORIES = 4


def backtest_kpis(body: Mapping, bundle_id: str, rev: int, data: list[str], from_text: str | None,
                  to_text: str | None) -> tuple[dict, list[dryrun.StoredSignal]]:
    """One in-process backtest (H6's runner); its KPIs and the signals S2 → S3 produced in it."""
    from chimera.backtest.data import load
    from chimera.backtest.results import summarize
    from chimera.backtest.runner import run

    ds = load(data, from_text, to_text)
    out = run(dict(body), ds.feed, ds.symbols, bundle_id=bundle_id, rev=rev)
    rows = out.store.query(SIGNALS, {}, order_by="t0")
    sigs = [dryrun.StoredSignal(str(d.get("signal_id") or d["_key"]), d["symbol"], int(d["t0"]),
                                dict(d.get("features") or {}), dict(d.get("prev") or {}))
            for d in rows if isinstance(d.get("features"), dict) and d.get("t0") is not None]
    return summarize(out).kpis, sigs


def _flips(base: Mapping[str, dict], other: Mapping[str, dict]) -> int:
    return sum(1 for k, d in base.items()
               if (d.get("action"), d.get("side")) != (other[k].get("action"), other[k].get("side")))


def _opens(decisions: Mapping[str, dict]) -> int:
    return sum(1 for d in decisions.values() if d.get("action") == "open")


def _bounded(p: params.Param, v: float) -> float:
    if p.where[0] == "then":
        lo, hi = ACTIONS[p.where[2]][1:]
        return min(max(v, lo), hi)
    return v


def sensitivity(body: Mapping, sigs: list[dryrun.StoredSignal], eps: float = DEFAULT_EPS) -> dict:
    base = dryrun.decide_all(body, sigs)
    k0 = _opens(base)
    n = len(sigs)
    rows: list[dict] = []
    plist = params.numeric_params(body)
    for p in plist:
        if p.value == 0:
            rows.append({"param": p.name, "value": p.value, "skipped": "zero value: a relative move is zero"})
            continue
        row: dict[str, Any] = {"param": p.name, "value": p.value, "flip_pct": 0.0, "lipschitz": 0.0,
                               "lipschitz_rel": 0.0, "kpi_minus": None, "kpi_plus": None}
        for sign, label in ((-1, "kpi_minus"), (1, "kpi_plus")):
            v = _bounded(p, p.value * (1 + sign * eps))
            if v == p.value:
                continue
            dec = dryrun.decide_all(params.with_value(body, p, v), sigs)
            k = _opens(dec)
            row[label] = k
            row["flip_pct"] = max(row["flip_pct"], round(_flips(base, dec) / n, 6) if n else 0.0)
            row["lipschitz"] = max(row["lipschitz"], abs(k - k0) / abs(v - p.value))
            rel = (abs(k - k0) / k0) / (abs(v - p.value) / abs(p.value)) if k0 else 0.0
            row["lipschitz_rel"] = max(row["lipschitz_rel"], round(rel, 6))
        rows.append(row)
    flips = [r["flip_pct"] for r in rows if "flip_pct" in r]
    out = {"eps": eps, "signals": n, "kpi": "opens", "kpi_base": k0, "params": rows,
           "robustness": round(1 - max(flips, default=0.0), 6)}
    live = [p for p in plist if p.value != 0]
    if len(live) > MORRIS_ABOVE and n:
        out["morris"] = morris(body, sigs, live, eps)
    return out


def morris(body: Mapping, sigs, plist: list[params.Param], eps: float) -> dict:
    try:
        from SALib.analyze import morris as analyze
        from SALib.sample import morris as sample
    except ImportError:
        return {"skipped": "SALib is not installed (pip install SALib)"}
    import numpy as np

    bounds = [sorted((_bounded(p, p.value * (1 - eps)), _bounded(p, p.value * (1 + eps)))) for p in plist]
    problem = {"num_vars": len(plist), "names": [p.name for p in plist],
               "bounds": [[lo, hi if hi > lo else lo + 1e-12] for lo, hi in bounds]}
    x = sample.sample(problem, MORRIS_TRAJECTORIES, num_levels=4, seed=7)
    y = []
    for row in x:
        b = dict(body)
        for p, v in zip(plist, row, strict=True):
            b = params.with_value(b, p, float(v))
        y.append(_opens(dryrun.decide_all(b, sigs)))
    res = analyze.analyze(problem, x, np.array(y, dtype=float), num_levels=4, seed=7)
    ranked = sorted(zip(plist, res["mu_star"], res["sigma"], strict=True), key=lambda t: -t[1])
    return {"trajectories": MORRIS_TRAJECTORIES, "runs": len(y),
            "mu_star": [{"param": p.name, "mu_star": float(m), "sigma": float(s)} for p, m, s in ranked]}


def simulate(store, bundle_id: str, rev: int, *, data: list[str], from_text: str | None = None,
             to_text: str | None = None, eps: float = DEFAULT_EPS, now_ms: int, by: str = "") -> dict:
    """POST /v1/simulate: stored in ``simulations/<sim_id>`` (same inputs → same id and figures)."""
    cand = service.get_bundle(store, bundle_id, rev)
    if cand is None:
        raise PermanentError(f"bundle {bundle_id}:{rev} is not stored (chimera bundles create FILE first)")
    ref, act = service.active_body(store)
    kpis_c, sigs = backtest_kpis(cand["body"], bundle_id, rev, data, from_text, to_text)
    kpis_a = None
    if act.get("strategy"):
        kpis_a, _ = backtest_kpis(act, *(ref.rsplit(":", 1)[0], int(ref.rsplit(":", 1)[1])), data, from_text, to_text)
    sens = sensitivity(cand["body"], sigs, eps)
    ident = json.dumps([bundle_id, rev, cand.get("sha256"), ref, data, from_text, to_text, eps], sort_keys=True)
    sim_id = "sim-" + hashlib.sha256(ident.encode()).hexdigest()[:16]
    table = [{"kpi": k, "active": None if kpis_a is None else kpis_a.get(k), "candidate": v} for k, v in kpis_c.items()]
    doc = {"sim_id": sim_id, "bundle_id": bundle_id, "rev": rev, "active": ref, "data_spec": list(data),
           "from": from_text or "", "to": to_text or "", "kpis": table, "sensitivity": sens,
           "robustness": sens["robustness"], "created_at": now_ms, "created_by": by}
    store.upsert(SIMULATIONS, sim_id, doc)
    return doc
