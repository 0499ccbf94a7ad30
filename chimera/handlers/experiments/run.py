"""S9: run one hypothesis family (``RunExperiment``) and record the verdicts.

``hypotheses/<hypothesis_id>``: ``family``, ``kind`` (``bundle``: a strategy bundle variant run through the
in-process backtest, ``bundles.py``; or a bar rule of ``chimera.research.strategies``: ``momentum`` |
``random``), ``grid`` (parameter → values), ``cost`` (per unit of turnover), ``metric``,
``direction``, ``status`` PENDING → CONFIRMED | REJECTED (compare-and-set, so a replay never flips a
verdict twice). For bar rules the incumbent is flat (no position); for bundles, the unchanged base bundle. Bars come from the venue's klines port, resampled
to ``period_min`` closes. Writes ``experiments/<experiment_id>``, the verdicts, ``OpsEvent``
EXPERIMENT_DONE on ``ops:events`` and ``bt:{last_run_ts}``.

Two ways to run: in this worker (hypotheses in ``experiments.processes`` parallel processes), or with
``distribute``: one ``RunTrial`` per hypothesis on ``exp:{trials}`` that any s9 replica takes; each stores
its walked hypothesis in ``experiment_trials``, and the one that stores the last emits
``FinalizeExperiment`` (a fixed idempotency key, so two finishing at once finalize once).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from chimera.errors import PermanentError
from chimera.research.experiment import Hypothesis, HypothesisResult, finalize, run_family, walk
from chimera.research.strategies import BarStrategies
from chimera.research.walkforward import Fold, walk_forward
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import FinalizeExperiment, OpsEvent, RunExperiment, RunTrial
from chimera.store.collections import EXPERIMENT_TRIALS, EXPERIMENTS, HYPOTHESES
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

DAY = 86_400_000
KINDS = ("momentum", "random")


def _clean(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _series(ctx: Context, p: RunExperiment) -> tuple[np.ndarray, np.ndarray]:
    step = p.period_min * 60_000
    closes: dict[int, float] = {}
    for k in ctx.venues.klines(p.symbol, p.start_ms, p.end_ms):
        closes[(k.open_time // step) * step] = float(k.close)  # the last 1m close of each period
    t = np.array(sorted(closes), dtype=np.int64)
    return t, np.array([closes[x] for x in t], dtype=float)


def _setup(ctx: Context, p: RunExperiment, hyps: list[dict]) -> tuple[BarStrategies, BarStrategies, list[Fold]]:
    kinds = {h.get("kind") for h in hyps}
    if len(kinds) != 1 or not kinds <= set(KINDS):
        raise PermanentError(f"family {p.family!r}: one kind of {KINDS} per family, got {sorted(map(str, kinds))}")
    times, closes = _series(ctx, p)
    folds = walk_forward(p.start_ms, p.end_ms, train_ms=p.train_days * DAY, test_ms=p.test_days * DAY,
                         horizon_ms=p.horizon_h * 3_600_000)
    if not folds or closes.size < 10:
        raise PermanentError(f"experiment {p.experiment_id}: the period gives no walk-forward fold "
                             f"({closes.size} bars, train {p.train_days}d + test {p.test_days}d)")
    ev = BarStrategies(times, closes, kinds.pop(), cost=float(hyps[0].get("cost", 0.0)))
    return ev, BarStrategies(times, closes, "flat"), folds


def _periods(p: RunExperiment) -> int:
    return 365 * 1440 // p.period_min


def _hypothesis(doc: dict, family: str) -> Hypothesis:
    return Hypothesis(doc["hypothesis_id"], family, dict(doc["grid"]))


def on_run(env: Envelope, ctx: Context) -> list[Emit]:
    p: RunExperiment = env.payload
    done = ctx.store.get(EXPERIMENTS, p.experiment_id)
    if done is not None and done.get("status") == "DONE":
        return [_event(p, done)]  # a repeated command re-announces the stored result
    hyps = [h for h in ctx.store.query(HYPOTHESES, {"family": p.family}, order_by="hypothesis_id")
            if h.get("status", "PENDING") == "PENDING"]
    if not hyps:
        raise PermanentError(f"family {p.family!r} has no PENDING hypotheses")
    if any(h.get("kind") == "bundle" for h in hyps):
        return _run_bundles(ctx, p, hyps)
    ev, flat, folds = _setup(ctx, p, hyps)
    if p.distribute:
        ctx.store.upsert(EXPERIMENTS, p.experiment_id, {
            "experiment_id": p.experiment_id, "family": p.family, "status": "RUNNING",
            "request": _clean(_msg(p)),
            "hypotheses": [h["hypothesis_id"] for h in hyps], "folds": [f.__dict__ for f in folds]})
        return [Emit(keys.EXP_TRIALS, RunTrial(experiment_id=p.experiment_id, hypothesis_id=h["hypothesis_id"]),
                     f"trial:{p.experiment_id}:{h['hypothesis_id']}") for h in hyps]
    processes = ctx.config.param("experiments", "processes", 1) if ctx.config is not None else 1
    results = run_family([_hypothesis(h, p.family) for h in hyps], ev, flat, folds, periods=_periods(p),
                         processes=processes)
    return _record(ctx, p, folds, results)


def _bundle_plan(ctx: Context, p: RunExperiment, hyps: list[dict]):
    """The family's ``bundles.Plan`` (and the loaded data) from its hypotheses: each ``{"kind": "bundle",
    "bundle": {...}, "grid": {key: [values]}, "data": [spec, ...]}``, all on one base bundle and one data set
    (files the worker can read), over [start_ms, end_ms)."""
    import json

    from chimera.backtest.data import DataError
    from chimera.handlers.experiments import bundles

    if {h.get("kind") for h in hyps} != {"bundle"}:
        raise PermanentError(f"family {p.family!r}: bundle hypotheses cannot share a family with bar rules")
    if len({json.dumps(h.get("bundle"), sort_keys=True) for h in hyps}) != 1 or \
            len({tuple(h.get("data") or ()) for h in hyps}) != 1 or not hyps[0].get("data"):
        raise PermanentError(f"family {p.family!r}: every bundle hypothesis needs the same 'bundle' and 'data'")
    varies = []
    for h in hyps:
        grid = h.get("grid") or {}
        if len(grid) != 1 or not isinstance(next(iter(grid.values())), list):
            raise PermanentError(f"hypothesis {h['hypothesis_id']}: 'grid' must be one {{key: [values]}}")
        (key, values), = grid.items()
        varies.append(bundles.Vary(key, tuple(values)))
    windows = bundles.Windows(train_h=p.train_days * 24, test_h=p.test_days * 24, horizon_h=p.horizon_h,
                              period_min=p.period_min)
    try:
        return bundles.plan(bundles.Base.of(hyps[0]["bundle"]), varies, list(hyps[0]["data"]), str(p.start_ms),
                            str(p.end_ms), windows=windows, family=p.family, experiment_id=p.experiment_id,
                            hypothesis_ids=[h["hypothesis_id"] for h in hyps])
    except (bundles.ExperimentError, DataError) as exc:
        raise PermanentError(f"experiment {p.experiment_id}: {exc}") from exc


def _run_bundles(ctx: Context, p: RunExperiment, hyps: list[dict]) -> list[Emit]:
    """Bundle variants (``bundles.py``). In this worker (``experiments.processes`` backtests in parallel
    processes), or with ``distribute`` one ``RunTrial`` per distinct variant (one backtest each) that any s9
    replica takes; the last stored emits ``FinalizeExperiment``."""
    from chimera.handlers.experiments import bundles

    plan, ds = _bundle_plan(ctx, p, hyps)
    if p.distribute:
        ctx.store.upsert(EXPERIMENTS, p.experiment_id, {
            "experiment_id": p.experiment_id, "family": p.family, "kind": "bundle", "status": "RUNNING",
            "request": _clean(_msg(p)), "hypotheses": [h["hypothesis_id"] for h in hyps],
            "trials_expected": len(plan.groups), "folds": [f.__dict__ for f in plan.folds]})
        return [Emit(keys.EXP_TRIALS, RunTrial(experiment_id=p.experiment_id, hypothesis_id=job[0]),
                     f"trial:{p.experiment_id}:{job[0]}") for job in plan.jobs()]
    processes = ctx.config.param("experiments", "processes", 1) if ctx.config is not None else 1
    jobs = plan.jobs(ds if processes <= 1 else None)
    if processes > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            runs = list(pool.map(bundles.run_job, jobs))
    else:
        runs = [bundles.run_job(j) for j in jobs]
    return _record_bundles(ctx, p, bundles.finish(plan, runs))


def _bundle_hyps(ctx: Context, doc: dict) -> list[dict]:
    return [h for h in (ctx.store.get(HYPOTHESES, hid) for hid in doc["hypotheses"]) if h is not None]


def _bundle_trial(ctx: Context, doc: dict, p: RunExperiment, vid: str) -> list[Emit]:
    from chimera.handlers.experiments import bundles

    plan, ds = _bundle_plan(ctx, p, _bundle_hyps(ctx, doc))
    job = next((j for j in plan.jobs(ds) if j[0] == vid), None)
    if job is None:
        raise PermanentError(f"experiment {p.experiment_id} has no variant {vid!r}")
    ctx.store.upsert(EXPERIMENT_TRIALS, f"{p.experiment_id}:{vid}",
                     bundles.trial_doc(p.experiment_id, bundles.run_job(job)))
    if ctx.store.count(EXPERIMENT_TRIALS, {"experiment_id": p.experiment_id}) < doc["trials_expected"]:
        return []
    return [Emit(keys.EXP_TRIALS, FinalizeExperiment(experiment_id=p.experiment_id), f"finalize:{p.experiment_id}")]


def _bundle_finalize(ctx: Context, doc: dict, p: RunExperiment) -> list[Emit]:
    from chimera.handlers.experiments import bundles

    plan, _ds = _bundle_plan(ctx, p, _bundle_hyps(ctx, doc))
    stored = {d["hypothesis_id"]: d for d in ctx.store.query(EXPERIMENT_TRIALS, {"experiment_id": p.experiment_id})}
    missing = [j[0] for j in plan.jobs() if j[0] not in stored]
    if missing:
        raise PermanentError(f"experiment {p.experiment_id}: trials missing for {missing}")
    runs = [bundles.from_trial_doc(stored[j[0]]) for j in plan.jobs()]
    return _record_bundles(ctx, p, {**bundles.finish(plan, runs), "distributed": True})


def _record_bundles(ctx: Context, p: RunExperiment, doc: dict) -> list[Emit]:
    now = ctx.now_ms()
    doc = {"distributed": False, **doc, "symbol": p.symbol, "horizon_h": p.horizon_h, "finished_at": now}
    if doc["distributed"]:
        doc["request"] = _clean(_msg(p))
    ctx.store.upsert(EXPERIMENTS, p.experiment_id, doc)
    for r in doc["results"]:
        ctx.store.update_if(HYPOTHESES, r["hypothesis_id"], {"status": r["verdict"], "q": r["q"],
                                                             "experiment_id": p.experiment_id}, {"status": "PENDING"})
    ctx.bt_marks.set_max(f"bt:{p.family}", now)
    return [_event(p, doc)]


def _msg(p) -> dict:
    import msgspec

    return msgspec.to_builtins(p)


def _request(ctx: Context, experiment_id: str) -> tuple[dict, RunExperiment]:
    import msgspec

    doc = ctx.store.get(EXPERIMENTS, experiment_id)
    if doc is None or "request" not in doc:
        raise PermanentError(f"no distributed experiment {experiment_id!r}")
    req = {k: v for k, v in doc["request"].items() if k != "type"}
    return doc, msgspec.convert(req, RunExperiment)


def on_trial(env: Envelope, ctx: Context) -> list[Emit]:
    t: RunTrial = env.payload
    doc, p = _request(ctx, t.experiment_id)
    if doc.get("kind") == "bundle":
        return _bundle_trial(ctx, doc, p, t.hypothesis_id)
    h = ctx.store.get(HYPOTHESES, t.hypothesis_id)
    if h is None:
        raise PermanentError(f"no hypothesis {t.hypothesis_id!r}")
    ev, _flat, folds = _setup(ctx, p, [h])
    res, series = walk(_hypothesis(h, p.family), ev, folds, _periods(p))
    ctx.store.upsert(EXPERIMENT_TRIALS, f"{t.experiment_id}:{t.hypothesis_id}", {
        "experiment_id": t.experiment_id, "hypothesis_id": t.hypothesis_id,
        "result": _clean(dataclasses.asdict(res)), "series": [float(x) for x in series]})
    if ctx.store.count(EXPERIMENT_TRIALS, {"experiment_id": t.experiment_id}) < len(doc["hypotheses"]):
        return []
    return [Emit(keys.EXP_TRIALS, FinalizeExperiment(experiment_id=t.experiment_id), f"finalize:{t.experiment_id}")]


def _nan(x):
    return math.nan if x is None else x


def on_finalize(env: Envelope, ctx: Context) -> list[Emit]:
    doc, p = _request(ctx, env.payload.experiment_id)
    if doc.get("status") == "DONE":
        return [_event(p, doc)]
    if doc.get("kind") == "bundle":
        return _bundle_finalize(ctx, doc, p)
    trials = {d["hypothesis_id"]: d for d in ctx.store.query(EXPERIMENT_TRIALS, {"experiment_id": p.experiment_id})}
    missing = [h for h in doc["hypotheses"] if h not in trials]
    if missing:
        raise PermanentError(f"experiment {p.experiment_id}: trials missing for {missing}")
    walked = []
    for hid in doc["hypotheses"]:
        r = dict(trials[hid]["result"])
        r["train_sharpes"] = [_nan(x) for x in r["train_sharpes"]]
        for k in ("spa_p", "psr", "dsr", "q"):
            r[k] = _nan(r.get(k))
        walked.append((HypothesisResult(**r), np.asarray(trials[hid]["series"], dtype=float)))
    hyps = [ctx.store.get(HYPOTHESES, hid) for hid in doc["hypotheses"]]
    _ev, flat, folds = _setup(ctx, p, hyps)
    bench = np.concatenate([flat({}, f.test_start, f.test_end) for f in folds])
    return _record(ctx, p, folds, finalize(walked, bench))


def _record(ctx: Context, p: RunExperiment, folds: list[Fold], results: list[HypothesisResult]) -> list[Emit]:
    now = ctx.now_ms()
    doc = {"experiment_id": p.experiment_id, "family": p.family, "symbol": p.symbol, "start_ms": p.start_ms,
           "end_ms": p.end_ms, "horizon_h": p.horizon_h, "folds": [f.__dict__ for f in folds],
           "trials": sum(r.trials for r in results), "status": "DONE", "finished_at": now,
           "distributed": p.distribute, "hypotheses": [r.hypothesis_id for r in results],
           "results": _clean([{"hypothesis_id": r.hypothesis_id, "verdict": r.verdict, "q": r.q, "spa_p": r.spa_p,
                               "psr": r.psr, "dsr": r.dsr, "trials": r.trials, "chosen": r.chosen, "kpis": r.kpis,
                               "fold_kpis": r.fold_kpis, "reasons": r.reasons} for r in results])}
    if p.distribute:
        doc["request"] = _clean(_msg(p))
    ctx.store.upsert(EXPERIMENTS, p.experiment_id, doc)
    for r in results:
        ctx.store.update_if(HYPOTHESES, r.hypothesis_id, {"status": r.verdict, "q": _clean(r.q),
                                                          "experiment_id": p.experiment_id}, {"status": "PENDING"})
    ctx.bt_marks.set_max(f"bt:{p.family}", now)
    return [_event(p, doc)]


def _event(p: RunExperiment, doc: dict) -> Emit:
    confirmed = [r["hypothesis_id"] for r in doc["results"] if r["verdict"] == "CONFIRMED"]
    return Emit(keys.OPS_EVENTS, OpsEvent(kind="EXPERIMENT_DONE", actor="s9", detail={
        "experiment_id": p.experiment_id, "family": p.family, "trials": str(doc["trials"]),
        "confirmed": ",".join(confirmed), "hypotheses": str(len(doc["results"]))}), f"exp:{p.experiment_id}:done")
