"""S9 on strategy bundles: each ``--vary key=v1,v2`` is a hypothesis ("tuning ``key`` over these values beats
the incumbent bundle out of sample"), walked forward over the backtest of every variant.

1. Every variant (the base bundle with one key set to one value, and the base itself, the incumbent) is
   checked with S3's own bundle parser, then run once over the whole period through the in-process
   backtest (``chimera.backtest``: S2 -> S3 -> S4 -> S6 against the venue engine, in event time). Variants
   run in ``processes`` parallel processes.
2. Each run's equity (wallet + unrealised, sampled every minute) becomes net returns per ``period_min``
   period: the period's equity at its end over its start, so they compound to the run's net return.
3. The S9 walk-forward (``research.walkforward``: train/test windows, purged and embargoed by the label
   horizon) picks each fold's value on the train window by Sharpe and scores it on the test window;
   ``research.experiment.run_family`` then gives per hypothesis Hansen's SPA p-value against the incumbent
   bundle, PSR and the deflated Sharpe over the family's real number of trials (values x folds of every
   key) and the Benjamini-Hochberg q across the family, and the verdict CONFIRMED / REJECTED with reasons.

A whole-period backtest sliced into windows is what a live bundle would have done in them (it carries any
position over a boundary; the backtest is causal, so a window never sees a later bar). The experiment id
is derived from what determines the result (bundle bytes, variations, data hash, windows), so a re-run
writes the same documents. Writes ``experiments/<id>`` and one ``hypotheses/<id>:<key>`` per key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from chimera.research.experiment import Hypothesis, HypothesisResult, kpis, run_family
from chimera.research.walkforward import walk_forward
from chimera.store.collections import EXPERIMENTS, HYPOTHESES

HOUR = 3_600_000


class ExperimentError(ValueError):
    """Bad input (a --vary, a key the bundle lacks, a variant S3 refuses, windows that give no fold)."""


@dataclass(frozen=True)
class Vary:
    key: str  # dotted path in the bundle, e.g. strategy.sizing.sl_atr
    values: tuple


@dataclass(frozen=True)
class Windows:
    train_h: float = 24.0
    test_h: float = 12.0
    horizon_h: float = 12.0  # the label horizon: purge and embargo
    period_min: int = 15


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string value


def parse_vary(texts: Sequence[str]) -> list[Vary]:
    out: list[Vary] = []
    for text in texts:
        key, sep, rest = text.partition("=")
        values = tuple(_value(v.strip()) for v in rest.split(",") if v.strip())
        if not sep or not key.strip() or not values:
            raise ExperimentError(f"--vary {text!r}: expected key=v1,v2,... e.g. strategy.sizing.sl_atr=1.0,1.5,2.0")
        if any(v.key == key.strip() for v in out):
            raise ExperimentError(f"--vary {key.strip()} given twice; list every value in one --vary")
        if len(set(map(json.dumps, values))) != len(values):
            raise ExperimentError(f"--vary {text!r}: a value is listed twice")
        out.append(Vary(key.strip(), values))
    if not out:
        raise ExperimentError("no --vary given; e.g. --vary strategy.sizing.sl_atr=1.0,1.5,2.0")
    return out


def with_value(body: dict, key: str, value) -> dict:
    """A copy of ``body`` with ``key`` (dotted) set; every parent must exist (a typo is an error, not a new key)."""
    out = copy.deepcopy(body)
    node = out
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            have = ", ".join(sorted(node)) if isinstance(node, dict) else "(not an object)"
            raise ExperimentError(f"--vary {key}: the bundle has no object {'.'.join(parts[:i + 1])!r}; "
                                  f"under {'.'.join(parts[:i]) or 'the top level'} it has: {have}")
        node = nxt
    node[parts[-1]] = value
    return out


def _check(body: dict, label: str) -> None:
    from chimera.errors import PermanentError
    from chimera.handlers.strategy.bundle import parse

    try:
        parse(body["strategy"], str(body.get("bundle_id", "")), int(body.get("rev", 1)), features=body.get("features"))
    except PermanentError as exc:
        raise ExperimentError(f"{label}: S3 refuses the variant: {exc}") from None


def _variant_id(bundle_id: str, body_text: str) -> str:
    """Each variant runs under its own bundle id: S3 caches a compiled bundle by (bundle_id, rev), and a
    variant is a different bundle (its decisions and positions are attributed to it)."""
    return f"{bundle_id}~{hashlib.sha256(body_text.encode()).hexdigest()[:10]}"


def _vid(key: str | None, value) -> str:
    return "base" if key is None else f"{key}={json.dumps(value, sort_keys=True)}"


# --- running the variants ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantRun:
    vid: str
    times: np.ndarray  # period starts, ms
    returns: np.ndarray  # net return per period
    kpis: dict  # the backtest's own summary KPIs over the whole period


def period_returns(points: Sequence[tuple[int, float]], start: int, end: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-period returns of an equity curve sampled at ``points`` (time, equity): equity at each period's end
    (the last sample at or before it) over its start. Periods [start + k*step, +step) up to ``end``."""
    ts = [t for t, _ in points]
    eq = [e for _, e in points]
    grid = np.arange(start, end, step, dtype=np.int64)

    def at(t: int) -> float:
        i = bisect_right(ts, t) - 1
        return eq[max(i, 0)]

    marks = [at(int(t)) for t in grid] + [at(end)]
    rets = np.array([b / a - 1.0 if a else 0.0 for a, b in zip(marks, marks[1:], strict=False)], dtype=float)
    return grid, rets


def _run_variant(args) -> VariantRun:
    vid, body, bundle_id, rev, data, from_, to, step, dataset = args
    from chimera.backtest.data import load
    from chimera.backtest.results import summarize
    from chimera.backtest.runner import run

    ds = dataset if dataset is not None else load(data, from_, to)
    out = run(body, dataclasses.replace(ds.feed, cursor=0), ds.symbols, bundle_id=bundle_id, rev=rev)
    points = [(p.t, float(p.wallet + p.unrealized)) for p in out.equity]
    start = (ds.start_ms // step) * step
    times, rets = period_returns(points, start, out.end_ms, step)
    return VariantRun(vid, times, rets, summarize(out).kpis)


@dataclass(frozen=True)
class VariantSeries:
    """The evaluate function S9's walk-forward calls: (params, start, end) -> the returns there of the variant
    ``params`` names (``{key: value}``), or of the base bundle for the incumbent. Plain arrays: it pickles."""

    times: np.ndarray
    by_vid: dict[str, np.ndarray]
    incumbent: bool = False

    def __call__(self, params: dict, start: int, end: int) -> np.ndarray:
        if self.incumbent:
            r = self.by_vid["base"]
        else:
            (name, value), = params.items()
            r = self.by_vid[_vid(name, value)]
        return r[(self.times >= start) & (self.times < end)]


# --- the experiment --------------------------------------------------------------------------------


def _clean(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, np.floating):
        return _clean(float(x))
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def run_experiment(bundle_path: str, vary: Sequence[str], data: Sequence[str], from_: str | None = None,
                   to: str | None = None, *, windows: Windows = Windows(), family: str | None = None,
                   alpha: float = 0.05, min_dsr: float = 0.95, reps: int = 300, processes: int = 1,
                   progress: Callable[[str], None] | None = None) -> dict:
    """``chimera experiments run``: check every input, run the variants, walk forward; returns the
    ``experiments`` document (not stored)."""
    from chimera.backtest.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    return run_variants(Base(bundle.body, bundle.bundle_id, bundle.rev, bundle.sha256), parse_vary(vary), data,
                        from_, to, windows=windows, family=family, alpha=alpha, min_dsr=min_dsr, reps=reps,
                        processes=processes, progress=progress)


@dataclass(frozen=True)
class Base:
    """The incumbent bundle the variants are made from."""

    body: dict
    bundle_id: str
    rev: int
    sha256: str

    @classmethod
    def of(cls, body: dict) -> Base:
        if not isinstance(body, dict) or not isinstance(body.get("strategy"), dict):
            raise ExperimentError("a bundle hypothesis needs 'bundle': a bundle object with a 'strategy' section")
        _check(body, "the base bundle")
        text = json.dumps(body, sort_keys=True)
        return cls(body, str(body.get("bundle_id") or "bundle"), int(body.get("rev", 1)),
                   hashlib.sha256(text.encode()).hexdigest())


@dataclass
class Plan:
    """What an experiment will run, fixed from its inputs (rebuilt identically by any s9 replica)."""

    experiment_id: str
    family: str
    base: Base
    varies: list[Vary]
    ids: list[str]  # hypothesis ids, one per Vary
    data: list[str]
    from_: str | None
    to: str | None
    windows: Windows
    alpha: float
    min_dsr: float
    reps: int
    variants: dict[str, dict]  # vid -> body
    groups: dict[str, list[str]]  # body JSON -> the vids with that body (run once, under the first)
    folds: list
    data_hash: str
    symbols: list[str]
    start_ms: int
    end_ms: int

    def jobs(self, ds=None) -> list[tuple]:
        """One backtest per distinct body: the ``_run_variant`` arguments (``ds``: reuse a loaded dataset)."""
        step = self.windows.period_min * 60_000
        return [(vids[0], self.variants[vids[0]], _variant_id(self.base.bundle_id, text), self.base.rev, self.data,
                 self.from_, self.to, step, ds) for text, vids in self.groups.items()]


def plan(base: Base, varies: Sequence[Vary], data: Sequence[str], from_: str | None, to: str | None, *,
         windows: Windows, family: str | None = None, alpha: float = 0.05, min_dsr: float = 0.95, reps: int = 300,
         experiment_id: str | None = None, hypothesis_ids: Sequence[str] | None = None):
    """Check every input and fix the experiment: (Plan, the loaded Dataset)."""
    from chimera.backtest.data import load

    variants: dict[str, dict] = {"base": base.body}
    for v in varies:
        for value in v.values:
            body = with_value(base.body, v.key, value)
            _check(body, f"--vary {v.key}={json.dumps(value)}")
            variants[_vid(v.key, value)] = body
    if windows.period_min <= 0 or min(windows.train_h, windows.test_h) <= 0 or windows.horizon_h < 0:
        raise ExperimentError("--period-min, --train-h and --test-h must be > 0 and --horizon-h >= 0")
    ds = load(list(data), from_, to)
    try:
        folds = walk_forward(ds.start_ms, ds.end_ms + 60_000, train_ms=int(windows.train_h * HOUR),
                             test_ms=int(windows.test_h * HOUR), horizon_ms=int(windows.horizon_h * HOUR))
    except ValueError as exc:
        raise ExperimentError(f"windows: {exc}") from None
    if not folds:
        raise ExperimentError(f"the data ({(ds.end_ms - ds.start_ms) / HOUR:.1f} h) give no walk-forward fold of "
                              f"train {windows.train_h} h + test {windows.test_h} h; shorten them or add data")
    ident = json.dumps([base.sha256, [[v.key, list(v.values)] for v in varies], ds.data_hash,
                        dataclasses.asdict(windows), alpha, min_dsr, reps], sort_keys=True)
    experiment_id = experiment_id or "exp-" + hashlib.sha256(ident.encode()).hexdigest()[:16]
    family = family or f"{base.bundle_id}:{experiment_id}"
    ids = list(hypothesis_ids) if hypothesis_ids is not None else [f"{family}:{v.key}" for v in varies]
    groups: dict[str, list[str]] = {}  # identical bodies (a value equal to the base's) run once
    for vid, body in variants.items():
        groups.setdefault(json.dumps(body, sort_keys=True), []).append(vid)
    return Plan(experiment_id, family, base, list(varies), ids, list(data), from_, to, windows, alpha, min_dsr, reps,
                variants, groups, folds, ds.data_hash, ds.symbols, ds.start_ms, ds.end_ms), ds


def run_variants(base: Base, varies: Sequence[Vary], data: Sequence[str], from_: str | None, to: str | None, *,
                 windows: Windows, family: str | None = None, alpha: float = 0.05, min_dsr: float = 0.95,
                 reps: int = 300, processes: int = 1, progress: Callable[[str], None] | None = None,
                 experiment_id: str | None = None, hypothesis_ids: Sequence[str] | None = None) -> dict:
    """The experiment over ``base`` and one hypothesis per ``Vary``, every backtest here (the CLI's path and
    the s9 worker's without ``distribute``)."""
    pl, ds = plan(base, varies, data, from_, to, windows=windows, family=family, alpha=alpha, min_dsr=min_dsr,
                  reps=reps, experiment_id=experiment_id, hypothesis_ids=hypothesis_ids)
    jobs = pl.jobs(ds if processes <= 1 else None)
    if progress:
        progress(f"{len(jobs)} backtests ({len(pl.variants)} variants) over {len(pl.symbols)} symbol(s), "
                 f"{len(pl.folds)} folds")
    if processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(processes) as pool:
            runs = list(pool.map(_run_variant, jobs))
    else:
        runs = [_run_variant(j) for j in jobs]
    return finish(pl, runs)


def finish(pl: Plan, runs: Sequence[VariantRun]) -> dict:
    """Walk forward over the variants' returns and judge the family: the ``experiments`` document."""
    first = {r.vid: r for r in runs}
    series: dict[str, VariantRun] = {vid: first[vids[0]] for vids in pl.groups.values() for vid in vids}
    times = series["base"].times
    by_vid = {vid: r.returns for vid, r in series.items()}
    family = pl.family
    hyps = [Hypothesis(hid, family, {v.key: list(v.values)}) for hid, v in zip(pl.ids, pl.varies, strict=True)]
    periods = 365 * 1440 // pl.windows.period_min
    incumbent = VariantSeries(times, by_vid, incumbent=True)
    results = run_family(hyps, VariantSeries(times, by_vid), incumbent, pl.folds, periods=periods, alpha=pl.alpha,
                         reps=pl.reps, min_dsr=pl.min_dsr)
    base_oos = np.concatenate([incumbent({}, f.test_start, f.test_end) for f in pl.folds])
    return _clean({
        "experiment_id": pl.experiment_id, "family": family, "kind": "bundle", "status": "DONE",
        "bundle_id": pl.base.bundle_id, "bundle_rev": pl.base.rev, "bundle_sha256": pl.base.sha256,
        "data_spec": pl.data, "data_hash": pl.data_hash, "symbols": pl.symbols, "from": pl.from_ or "",
        "to": pl.to or "", "start_ms": pl.start_ms, "end_ms": pl.end_ms, "windows": dataclasses.asdict(pl.windows),
        "alpha": pl.alpha, "min_dsr": pl.min_dsr, "folds": [f.__dict__ for f in pl.folds],
        "trials": sum(r.trials for r in results), "hypotheses": [r.hypothesis_id for r in results],
        "vary": [{"key": v.key, "values": list(v.values)} for v in pl.varies],
        "incumbent": {"kpis": kpis(base_oos, periods)},
        "variants": [{"variant": vid, "backtest_kpis": series[vid].kpis, "period_returns": series[vid].returns.tolist()}
                     for vid in pl.variants],
        "period_starts": times.tolist(),
        "results": [_result(r) for r in results],
    })


def run_job(job: tuple) -> VariantRun:
    """One variant's backtest (an s9 trial)."""
    return _run_variant(job)


def trial_doc(experiment_id: str, run: VariantRun) -> dict:
    return {"experiment_id": experiment_id, "hypothesis_id": run.vid, "kind": "bundle_variant",
            "times": run.times.tolist(), "returns": run.returns.tolist(), "kpis": run.kpis}


def from_trial_doc(doc: dict) -> VariantRun:
    return VariantRun(doc["hypothesis_id"], np.asarray(doc["times"], dtype=np.int64),
                      np.asarray(doc["returns"], dtype=float), doc["kpis"])


def _result(r: HypothesisResult) -> dict:
    return {"hypothesis_id": r.hypothesis_id, "verdict": r.verdict, "q": r.q, "spa_p": r.spa_p, "psr": r.psr,
            "dsr": r.dsr, "trials": r.trials, "chosen": r.chosen, "kpis": r.kpis, "fold_kpis": r.fold_kpis,
            "train_sharpes": r.train_sharpes, "reasons": r.reasons}


def save(doc: dict, store, now_ms: int) -> None:
    """``experiments/<id>`` and ``hypotheses/<family>:<key>`` (kind ``bundle``) with the verdict: the same
    input writes the same documents (``finished_at`` aside)."""
    store.upsert(EXPERIMENTS, doc["experiment_id"], {**doc, "finished_at": now_ms})
    for v, r in zip(doc["vary"], doc["results"], strict=True):
        store.upsert(HYPOTHESES, r["hypothesis_id"], {
            "hypothesis_id": r["hypothesis_id"], "family": doc["family"], "kind": "bundle",
            "bundle_id": doc["bundle_id"], "bundle_sha256": doc["bundle_sha256"], "grid": {v["key"]: v["values"]},
            "metric": "sharpe", "direction": "greater", "status": r["verdict"], "q": r["q"],
            "experiment_id": doc["experiment_id"]})


