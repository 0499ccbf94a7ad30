"""``chimera experiments run``: bundle variants through the in-process backtest, walked forward, with S9's
statistics (``chimera/handlers/experiments/bundles.py``, ``docs/experiments.md``)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

app = typer.Typer(help="S9 experiments: bundle variants walked forward with honest statistics.", no_args_is_help=True)

RUN_HELP = """Run every --vary value of a bundle through the in-process backtest over --data, walk forward (the value
chosen on each train window by Sharpe, scored on the next test window, purged and embargoed by the label horizon)
and test each varied key against the unchanged bundle: Hansen's SPA, deflated Sharpe over every trial of the
family, Benjamini-Hochberg across the keys. Writes experiments/<id> and hypotheses/<family>:<key>."""


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


@app.command("run", help=RUN_HELP)
def run_cmd(
    bundle: Annotated[str, typer.Option("--bundle", help="the base (incumbent) strategy bundle JSON file")],
    vary: Annotated[list[str], typer.Option("--vary", help="KEY=V1,V2,... a dotted bundle key and the values to try "
                                                           "(JSON values); one hypothesis per --vary, repeat it")],
    data: Annotated[list[str], typer.Option("--data", help="as for chimera backtest: 'sample', a Binance Vision or "
                                                           "freqtrade file, or kind:futures:SYMBOL:path; repeat")],
    from_: Annotated[str | None, typer.Option("--from", help="start, UTC (2025-07-06[T12:00] or epoch ms)")] = None,
    to: Annotated[str | None, typer.Option("--to", help="end, exclusive, same forms")] = None,
    train_h: Annotated[float, typer.Option("--train-h", help="train window, hours")] = 24.0,
    test_h: Annotated[float, typer.Option("--test-h", help="test window, hours")] = 12.0,
    horizon_h: Annotated[float, typer.Option("--horizon-h", help="label horizon, hours: purge and embargo")] = 12.0,
    period_min: Annotated[int, typer.Option("--period-min", help="return period, minutes")] = 15,
    alpha: Annotated[float, typer.Option("--alpha", help="false discovery rate (Benjamini-Hochberg)")] = 0.05,
    min_dsr: Annotated[float, typer.Option("--min-dsr", help="deflated Sharpe a confirmation needs")] = 0.95,
    reps: Annotated[int, typer.Option("--reps", help="SPA bootstrap replications")] = 300,
    processes: Annotated[int, typer.Option("--processes", help="backtests in parallel processes")] = 1,
    family: Annotated[str | None, typer.Option("--family", help="hypothesis family name (default bundle:id)")] = None,
) -> None:
    from chimera.backtest.bundle import BundleError
    from chimera.backtest.data import DataError
    from chimera.errors import FatalError
    from chimera.handlers.experiments.bundles import ExperimentError, Windows, run_experiment, save
    from chimera.ops.bootstrap import stores_from
    from chimera.ops.settings import load_settings

    try:
        store, _objects = stores_from(load_settings())
    except FatalError as exc:
        _fail(str(exc))
    t0 = time.monotonic()
    try:
        doc = run_experiment(bundle, vary, data, from_, to, family=family, alpha=alpha, min_dsr=min_dsr, reps=reps,
                             processes=processes, windows=Windows(train_h, test_h, horizon_h, period_min),
                             progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (BundleError, DataError, ExperimentError) as exc:
        _fail(str(exc))
    save(doc, store, int(time.time() * 1000))  # an operator's run: wall time is when it finished
    typer.echo(f"experiment {doc['experiment_id']}  family {doc['family']}  {len(doc['folds'])} folds  "
               f"{doc['trials']} trials  {len(doc['variants'])} variants  {time.monotonic() - t0:.1f} s")
    inc = doc["incumbent"]["kpis"]
    typer.echo(f"incumbent (out of sample): sharpe {_fmt(inc['sharpe'])}  net {_fmt(inc['net_return'])}")
    for r in doc["results"]:
        k = r["kpis"]
        chosen = ", ".join(str(next(iter(c.values()))) for c in r["chosen"])
        typer.echo(f"{r['hypothesis_id']}: {r['verdict']}  q {_fmt(r['q'])}  SPA p {_fmt(r['spa_p'])}  "
                   f"DSR {_fmt(r['dsr'])}  sharpe {_fmt(k['sharpe'])}  net {_fmt(k['net_return'])}  "
                   f"chosen per fold [{chosen}]")
        for reason in r["reasons"]:
            typer.echo(f"    {reason}")
