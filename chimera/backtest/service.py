"""``chimera backtest`` as a service: check the inputs, run, write ``backtest_runs``, ``backtest_trades``
and the HTML report. Every input is checked before anything runs, so bad input writes nothing.

The run id is derived from what determines the result (bundle bytes, data bytes and period, fill and
fee model), so running the same backtest twice writes the same documents and report, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from chimera.backtest.bundle import load_bundle
from chimera.backtest.data import Dataset, load
from chimera.store.collections import BACKTEST_RUNS, BACKTEST_TRADES
from chimera.venues.local.engine import Fees, FillModel

if TYPE_CHECKING:
    from chimera.backtest.results import Summary

REPORT_KEY = "backtests/{run_id}/report.html"
CURVE_POINTS = 4000  # equity points kept for the report (KPIs use every per-minute sample)


@dataclass
class Result:
    run: dict
    summary: Summary
    html: str


def _models() -> tuple[dict, dict]:
    return ({k: str(v) for k, v in asdict(FillModel()).items()}, {k: str(v) for k, v in asdict(Fees()).items()})


def run_id_for(prefix: str, bundle, ds: Dataset) -> str:
    """Same inputs, same id (``bt-`` in-process, ``rr-`` the Redis replay of them)."""
    fill, fees = _models()
    ident = json.dumps([bundle.sha256, ds.data_hash, fill, fees], sort_keys=True)
    return prefix + hashlib.sha256(ident.encode()).hexdigest()[:16]


def result(run_id: str, runtime: str, bundle, ds: Dataset, data: list[str], from_text: str | None,
           to_text: str | None, summary: Summary, equity) -> Result:
    """The run document and its HTML report, whichever runtime produced the summary."""
    from chimera.backtest.report import render

    fill, fees = _models()
    doc = {"run_id": run_id, "bundle_id": bundle.bundle_id, "bundle_rev": bundle.rev,
           "bundle_sha256": bundle.sha256, "data_spec": list(data),
           "data": [{"kind": s.kind, "symbol": s.symbol, "interval": s.interval, "path": s.path} for s in ds.specs],
           "data_hash": ds.data_hash, "from": from_text or "", "to": to_text or "", "symbols": ds.symbols,
           "fill_model": fill, "fees": fees, "kpis": summary.kpis,
           "checks": [{**c, "ok": bool(c["ok"])} for c in summary.checks],
           "report_key": REPORT_KEY.format(run_id=run_id), "runtime": runtime}
    html = render({**doc, "fill_model": ", ".join(f"{k}={v}" for k, v in fill.items())}, summary, equity)
    return Result(run=doc, summary=summary, html=html)


def backtest(bundle_path: str, data: list[str], from_text: str | None = None, to_text: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> Result:
    bundle = load_bundle(bundle_path)
    ds: Dataset = load(data, from_text, to_text, stream=True)  # generated while replayed: a year fits
    run_id = run_id_for("bt-", bundle, ds)
    from chimera.backtest.results import summarize  # the handlers load only once the inputs are known good
    from chimera.backtest.runner import run

    with tempfile.TemporaryDirectory(prefix="chimera-bt-") as tmp:  # the run's own store, on disk: a year fits
        out = run(bundle.body, ds.feed, ds.symbols, bundle_id=bundle.bundle_id, rev=bundle.rev, progress=progress,
                  store_url=f"sqlite:///{tmp}/run.sqlite", curve_limit=CURVE_POINTS)
        summary = summarize(out)
        out.store.close()
    return result(run_id, "in-process", bundle, ds, data, from_text, to_text, summary, out.equity)


def save(result: Result, store, objects, report_path: str | None = None) -> None:
    """Write the run, its trades and the report (same key → same content on a re-run)."""
    run_id = result.run["run_id"]
    for old in store.query(BACKTEST_TRADES, {"run_id": run_id}):
        store.delete(BACKTEST_TRADES, old["_key"])
    for t in result.summary.trades:
        store.upsert(BACKTEST_TRADES, f"{run_id}:{t.n:06d}", t.doc(run_id))
    store.upsert(BACKTEST_RUNS, run_id, result.run)
    data = result.html.encode()
    objects.put(result.run["report_key"], data, "text/html; charset=utf-8")
    if report_path:
        with open(report_path, "wb") as fh:
            fh.write(data)
