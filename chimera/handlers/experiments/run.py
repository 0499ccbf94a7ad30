"""S9: run one hypothesis family (``RunExperiment``) and record the verdicts.

``hypotheses/<hypothesis_id>``: ``family``, ``kind`` (a bar rule of ``chimera.research.strategies``:
``momentum`` | ``random``), ``grid`` (parameter → values), ``cost`` (per unit of turnover), ``metric``,
``direction``, ``status`` PENDING → CONFIRMED | REJECTED (compare-and-set, so a replay never flips a
verdict twice). The incumbent is flat (no position). Bars come from the venue's klines port, resampled
to ``period_min`` closes. Writes ``experiments/<experiment_id>``, the verdicts, ``OpsEvent``
EXPERIMENT_DONE on ``ops:events`` and ``bt:{last_run_ts}``.
"""

from __future__ import annotations

import math

import numpy as np

from chimera.errors import PermanentError
from chimera.ports.research_marks import RedisMarks, marks_for
from chimera.research.experiment import Hypothesis, run_family
from chimera.research.strategies import BarStrategies
from chimera.research.walkforward import walk_forward
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import OpsEvent, RunExperiment
from chimera.store.collections import EXPERIMENTS, HYPOTHESES
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
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _series(ctx: Context, p: RunExperiment) -> tuple[np.ndarray, np.ndarray]:
    step = p.period_min * 60_000
    closes: dict[int, float] = {}
    for k in ctx.venues.klines(p.symbol, p.start_ms, p.end_ms):
        closes[(k.open_time // step) * step] = float(k.close)  # the last 1m close of each period
    t = np.array(sorted(closes), dtype=np.int64)
    return t, np.array([closes[x] for x in t], dtype=float)


def on_run(env: Envelope, ctx: Context) -> list[Emit]:
    p: RunExperiment = env.payload
    done = ctx.store.get(EXPERIMENTS, p.experiment_id)
    if done is not None and done.get("status") == "DONE":
        return [_event(p, done)]  # a repeated command re-announces the stored result
    hyps = [h for h in ctx.store.query(HYPOTHESES, {"family": p.family}, order_by="hypothesis_id")
            if h.get("status", "PENDING") == "PENDING"]
    if not hyps:
        raise PermanentError(f"family {p.family!r} has no PENDING hypotheses")
    kinds = {h.get("kind") for h in hyps}
    if len(kinds) != 1 or not kinds <= set(KINDS):
        raise PermanentError(f"family {p.family!r}: one kind of {KINDS} per family, got {sorted(map(str, kinds))}")
    times, closes = _series(ctx, p)
    folds = walk_forward(p.start_ms, p.end_ms, train_ms=p.train_days * DAY, test_ms=p.test_days * DAY,
                         horizon_ms=p.horizon_h * 3_600_000)
    if not folds or closes.size < 10:
        raise PermanentError(f"experiment {p.experiment_id}: the period gives no walk-forward fold "
                             f"({closes.size} bars, train {p.train_days}d + test {p.test_days}d)")
    cost = float(hyps[0].get("cost", 0.0))
    ev = BarStrategies(times, closes, kinds.pop(), cost=cost)
    flat = BarStrategies(times, closes, "flat")
    processes = ctx.config.param("experiments", "processes", 1) if ctx.config is not None else 1
    results = run_family([Hypothesis(h["hypothesis_id"], p.family, dict(h["grid"])) for h in hyps], ev, flat, folds,
                         periods=365 * 1440 // p.period_min, processes=processes)
    now = ctx.now_ms()
    doc = {"experiment_id": p.experiment_id, "family": p.family, "symbol": p.symbol, "start_ms": p.start_ms,
           "end_ms": p.end_ms, "horizon_h": p.horizon_h, "folds": [f.__dict__ for f in folds],
           "trials": sum(r.trials for r in results), "status": "DONE", "finished_at": now,
           "results": _clean([{"hypothesis_id": r.hypothesis_id, "verdict": r.verdict, "q": r.q, "spa_p": r.spa_p,
                               "psr": r.psr, "dsr": r.dsr, "trials": r.trials, "chosen": r.chosen, "kpis": r.kpis,
                               "fold_kpis": r.fold_kpis, "reasons": r.reasons} for r in results])}
    ctx.store.upsert(EXPERIMENTS, p.experiment_id, doc)
    for r in results:
        ctx.store.update_if(HYPOTHESES, r.hypothesis_id, {"status": r.verdict, "q": _clean(r.q),
                                                          "experiment_id": p.experiment_id}, {"status": "PENDING"})
    marks = ctx.services.get("bt_marks")
    if marks is None:
        marks = ctx.services["bt_marks"] = RedisMarks(ctx.redis, keys.BT_LAST_RUN) if ctx.redis is not None else marks_for(ctx)
    marks.set_max(f"bt:{p.family}", now)
    return [_event(p, doc)]


def _event(p: RunExperiment, doc: dict) -> Emit:
    confirmed = [r["hypothesis_id"] for r in doc["results"] if r["verdict"] == "CONFIRMED"]
    return Emit(keys.OPS_EVENTS, OpsEvent(kind="EXPERIMENT_DONE", actor="s9", detail={
        "experiment_id": p.experiment_id, "family": p.family, "trials": str(doc["trials"]),
        "confirmed": ",".join(confirmed), "hypotheses": str(len(doc["results"]))}), f"exp:{p.experiment_id}:done")
