"""``chimera backtest`` and ``chimera report`` (registered on the main CLI by ``register(app)``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

BACKTEST_HELP = """Run a strategy bundle over history: S2 -> S3 -> S4 -> S6 on the in-process runtime against the
venue engine, in event time. Writes backtest_runs / backtest_trades and an HTML report (object store)."""


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _progress():
    tty = sys.stderr.isatty()
    last = [-1]

    def show(done: int, total: int) -> None:
        pct = done * 100 // max(total, 1)
        if pct == last[0]:
            return
        last[0] = pct
        if tty:
            bar = "#" * (pct // 4)
            print(f"\rreplay [{bar:<25}] {pct:3d}% {done}/{total} events", end="" if pct < 100 else "\n",
                  file=sys.stderr, flush=True)
        elif pct % 10 == 0:
            print(f"replay {pct}% ({done}/{total} events)", file=sys.stderr, flush=True)
    return show


def print_summary(run: dict) -> None:
    k = run["kpis"]
    rows = [("run", run["run_id"]), ("bundle", f"{run['bundle_id']} rev {run['bundle_rev']}"),
            ("symbols", ", ".join(run["symbols"])), ("bars", k["bars"]),
            ("trades (closed/open)", f"{k['trades']} ({k['closed_trades']}/{k['open_trades']})"),
            ("net PnL USDT", k["net_pnl_usdt"]), ("return %", k["return_pct"]),
            ("max drawdown USDT (%)", f"{k['max_drawdown_usdt']} ({k['max_drawdown_pct']})"),
            ("win rate %", k["win_rate_pct"]), ("profit factor", k["profit_factor"] or "n/a"),
            ("realized PnL USDT", k["realized_pnl_usdt"]), ("fees USDT", k["fees_usdt"]),
            ("funding USDT", k["funding_usdt"]), ("time exposed %", k["exposure_time_pct"]),
            ("liquidations", k["liquidations"]), ("dead letters", k["dead_letters"])]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        typer.echo(f"{a:<{width}}  {b}")
    for c in run["checks"]:
        mark = "holds" if c["ok"] else "DIFFERS"
        typer.echo(f"books: {c['check']}: {mark} (expected {c['expected']}, actual {c['actual']})")


def backtest(
    bundle: Annotated[str, typer.Option("--bundle", help="strategy bundle JSON file")],
    data: Annotated[list[str], typer.Option("--data", help="'sample', a Binance Vision zip / freqtrade "
                                                            "json|feather file, or kind:futures:SYMBOL:path[:interval]; "
                                                            "repeat per file")],
    from_: Annotated[str | None, typer.Option("--from", help="start, UTC: 2025-07-01[T12:00] or epoch ms")] = None,
    to: Annotated[str | None, typer.Option("--to", help="end (exclusive: the bar opening at --to is not replayed), same forms")] = None,
    report: Annotated[str | None, typer.Option("--report", help="also write the HTML report to this path")] = None,
) -> None:
    from chimera.backtest.bundle import BundleError
    from chimera.backtest.data import DataError
    from chimera.backtest.service import backtest as run_backtest
    from chimera.backtest.service import save
    from chimera.errors import FatalError
    from chimera.ops.bootstrap import stores_from
    from chimera.ops.settings import load_settings

    try:
        settings = load_settings()
        store, objects = stores_from(settings)
    except FatalError as exc:
        _fail(str(exc))
    try:
        result = run_backtest(bundle, data, from_, to, progress=_progress())
    except (BundleError, DataError) as exc:
        _fail(str(exc))
    save(result, store, objects, report)
    print_summary(result.run)
    where = f"{settings.objects_url}/{result.run['report_key']}"
    typer.echo(f"report: {where}" + (f" and {report}" if report else ""))


def report(run: Annotated[str, typer.Option("--run", help="a backtest run id (bt-...)")],
           html: Annotated[str | None, typer.Option("--html", help="write its HTML report here")] = None) -> None:
    """Show a stored run: KPIs and the books' identity (wallet change = Σ realized − Σ fees + Σ funding)."""
    from chimera.errors import FatalError
    from chimera.ops.bootstrap import stores_from
    from chimera.ops.settings import load_settings
    from chimera.store.collections import BACKTEST_RUNS

    try:
        store, objects = stores_from(load_settings())
    except FatalError as exc:
        _fail(str(exc))
    doc = store.get(BACKTEST_RUNS, run)
    if doc is None:
        known = [d["_key"] for d in store.query(BACKTEST_RUNS, {}, limit=10)]
        _fail(f"no run {run!r} in backtest_runs" + (f"; known: {', '.join(known)}" if known else
                                                     "; run `chimera backtest` first"))
    print_summary(doc)
    if html:
        with open(html, "wb") as fh:
            fh.write(objects.get(doc["report_key"]))
        typer.echo(f"report written to {html}")
    if not all(c["ok"] for c in doc["checks"]):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("backtest", help=BACKTEST_HELP)(backtest)
    app.command("report")(report)
