"""``chimera bundles``: lint, create (with dry-run), simulate, promote and follow strategy bundles (S10).

Lint and create run here against the document store; promote publishes ``PromoteBundle`` on
``cfg:{commands}`` for the ``s10`` worker (``chimera up`` starts it), which runs the staged rollout.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Strategy bundles: lint, create + dry-run, simulate, staged promote (S10).",
                  no_args_is_help=True)


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings():
    from chimera.ops.settings import load_settings

    return load_settings()


def _store():
    from chimera.errors import FatalError
    from chimera.ops.bootstrap import stores_from

    try:
        return stores_from(_settings())[0]
    except FatalError as exc:
        _fail(str(exc))


def _now() -> int:
    return int(time.time() * 1000)


def _read(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        _fail(f"{path}: no such file (give a bundle JSON file)")
    return p.read_text()


def _ref(store, target: str) -> tuple[str, int]:
    """FILE (created first if needed) or BUNDLE_ID:REV."""
    if Path(target).is_file():
        return _create(store, target, by="", days=7.0, quiet=True)
    bid, _, rev = target.rpartition(":")
    if not bid or not rev.isdigit():
        _fail(f"{target!r}: give a bundle file or BUNDLE_ID:REV (e.g. sample_vol_breakout:2)")
    return bid, int(rev)


def _print_issues(path: str, report) -> None:
    from chimera.handlers.config.lint import format_issue

    for issue in [*report.errors, *report.warnings]:
        typer.secho(format_issue(path, issue), fg=typer.colors.RED if issue.severity == "error" else typer.colors.YELLOW,
                    err=issue.severity == "error")


@app.command("lint")
def lint_cmd(file: str) -> None:
    """Lint a bundle file: every error with its position (exit 1), warnings shown."""
    from chimera.handlers.config.lint import lint_text

    _, report = lint_text(_read(file))
    _print_issues(file, report)
    if not report.ok:
        typer.secho(f"{file}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)", fg=typer.colors.RED,
                    err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok ({len(report.warnings)} warning(s))")


def _create(store, file: str, *, by: str, days: float, quiet: bool = False) -> tuple[str, int]:
    from chimera.errors import PermanentError
    from chimera.handlers.config import service

    text = _read(file)
    try:
        doc = service.create(store, text=text, now_ms=_now(), by=by, source=file, days=days)
    except service.BundleRejected as exc:
        _print_issues(file, exc.report)
        _fail(f"{file}: {exc} (fix them; chimera bundles lint {file} lists them)", 1)
    except PermanentError as exc:
        _fail(f"{file}: {exc}")
    if not quiet:
        d = doc.dry_run
        typer.echo(f"created {doc.bundle_id}:{doc.rev} ({doc.status}); lint ok, {len(doc.lint.warnings)} warning(s)")
        _print_issues(file, doc.lint)
        typer.echo(f"dry-run vs {d.active or '(no active bundle)'} on {d.signals} stored signals of the last {days:g} "
                   f"days:\n  opens active {d.opens_active}  candidate {d.opens_candidate}  delta trades "
                   f"{d.delta_trades:+d}\n  decisions flipped {d.decisions_flipped} ({d.flipped_pct:.2%})  Jaccard of "
                   f"opens {d.jaccard_opens:.3f}\n  rule override rate active {d.override_rate_active:.2%}  candidate "
                   f"{d.override_rate_candidate:.2%}")
    return doc.bundle_id, doc.rev


@app.command("create")
def create_cmd(file: str,
               by: Annotated[str, typer.Option("--by", help="who creates it (recorded)")] = "",
               days: Annotated[float, typer.Option(help="dry-run over the stored signals of the last N days")] = 7.0,
               ) -> None:
    """Lint, dry-run against the active bundle and store the bundle in config_bundles."""
    _create(_store(), file, by=by, days=days)


@app.command("simulate")
def simulate_cmd(target: Annotated[str, typer.Argument(help="bundle FILE or BUNDLE_ID:REV")],
                 data: Annotated[list[str], typer.Option("--data", help="as chimera backtest --data")] = ["sample"],  # noqa: B006
                 from_: Annotated[str | None, typer.Option("--from")] = None,
                 to: Annotated[str | None, typer.Option("--to")] = None,
                 eps: Annotated[float, typer.Option(help="relative perturbation of each parameter")] = 0.05,
                 by: Annotated[str, typer.Option("--by")] = "") -> None:
    """Candidate vs active backtest on one window (KPIs side by side) and the ±eps sensitivity."""
    from chimera.backtest.data import DataError
    from chimera.errors import PermanentError
    from chimera.handlers.config.simulate import simulate

    store = _store()
    bid, rev = _ref(store, target)
    if not 0 < eps < 1:
        _fail(f"--eps {eps}: give a relative move in (0, 1), e.g. 0.05")
    try:
        doc = simulate(store, bid, rev, data=data, from_text=from_, to_text=to, eps=eps, now_ms=_now(), by=by)
    except (DataError, PermanentError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"simulation {doc['sim_id']}: {bid}:{rev} vs {doc['active'] or '(no active bundle)'}")
    typer.echo(f"{'kpi':<22}{'active':>18}{'candidate':>18}")
    for row in doc["kpis"]:
        typer.echo(f"{row['kpi']:<22}{str(row['active']):>18}{str(row['candidate']):>18}")
    s = doc["sensitivity"]
    typer.echo(f"sensitivity (eps {s['eps']}, {s['signals']} signals, KPI {s['kpi']} = {s['kpi_base']}); "
               f"robustness {s['robustness']:.3f}")
    for p in s["params"]:
        if "skipped" in p:
            typer.echo(f"  {p['param']:<40} skipped: {p['skipped']}")
        else:
            typer.echo(f"  {p['param']:<40} flip_pct {p['flip_pct']:.4f}  L {p['lipschitz']:.4g}  "
                       f"L_rel {p['lipschitz_rel']:.4g}")
    if "morris" in s:
        typer.echo("morris: " + json.dumps(s["morris"])[:2000])


@app.command("promote")
def promote_cmd(target: Annotated[str, typer.Argument(help="bundle FILE or BUNDLE_ID:REV")],
                by: Annotated[str, typer.Option("--by", help="who asks for it")] = "",
                approved_by: Annotated[str, typer.Option("--approved-by", help="the second person (real capital)")] = "",
                ) -> None:
    """Start the staged rollout (shadow, canary, ramp 10/50/100) in the s10 worker."""
    from chimera.errors import FatalError
    from chimera.ops.bootstrap import redis_from
    from chimera.schemas.messages import PromoteBundle
    from chimera.streams import keys
    from chimera.streams.producer import Producer
    from chimera.workers.clock import WallClock

    store = _store()
    bid, rev = _ref(store, target)
    pid = f"pr-{uuid.uuid4().hex[:16]}"
    try:
        r = redis_from(_settings())
    except FatalError as exc:
        _fail(str(exc))
    Producer(r, WallClock()).publish(keys.CFG_COMMANDS, PromoteBundle(
        promotion_id=pid, bundle_id=bid, rev=rev, requested_by=by, approved_by=approved_by), idempotency_key=pid)
    typer.echo(f"promotion {pid}: {bid}:{rev} submitted; follow it with chimera bundles status {pid}")


@app.command("status")
def status_cmd(target: Annotated[str | None, typer.Argument(help="promotion id, bundle FILE or BUNDLE_ID:REV")]
               = None) -> None:
    """The active bundle, and a promotion's steps (or a bundle's promotions)."""
    from chimera.handlers.config import service
    from chimera.store.collections import PROMOTIONS

    store = _store()
    typer.echo(f"active: {json.dumps(service.active(store))}")
    if not target:
        return
    docs = [store.get(PROMOTIONS, target)] if store.get(PROMOTIONS, target) else None
    if docs is None:
        bid, rev = _ref(store, target)
        b = service.get_bundle(store, bid, rev) or {}
        typer.echo(f"bundle {bid}:{rev}: {b.get('status')}")
        docs = store.query(PROMOTIONS, {"bundle_id": bid, "rev": rev}, order_by="created_at")
    for d in docs:
        typer.echo(f"promotion {d['_key']}: {d['bundle_id']}:{d['rev']} {d['state']} (previous "
                   f"{d['previous_bundle_id']}:{d['previous_rev']}, approved by {d.get('approved_by') or '-'})")
        for s in d.get("steps", []):
            typer.echo(f"  {s['at_ms']} {s['from_state']:>9} --{s['event']}--> {s['to_state']:<11} active "
                       f"{s['active']} {json.dumps(s.get('metrics') or {})} {'; '.join(s.get('reasons') or [])}")


def _command(pid: str, action: str, by: str) -> None:
    from chimera.ops.bootstrap import redis_from
    from chimera.schemas.messages import PromotionCommand
    from chimera.store.collections import PROMOTIONS
    from chimera.streams import keys
    from chimera.streams.producer import Producer
    from chimera.workers.clock import WallClock

    if _store().get(PROMOTIONS, pid) is None:
        _fail(f"promotion {pid} does not exist (chimera bundles status FILE lists a bundle's promotions)")
    Producer(redis_from(_settings()), WallClock()).publish(
        keys.CFG_COMMANDS, PromotionCommand(promotion_id=pid, action=action, by=by),
        idempotency_key=f"{pid}:{action}:{uuid.uuid4().hex[:8]}")
    typer.echo(f"{action} sent for {pid}")


@app.command("resume")
def resume_cmd(promotion_id: str, by: Annotated[str, typer.Option("--by")] = "") -> None:
    """Resume a PAUSED rollout in the stage it paused in."""
    _command(promotion_id, "RESUME", by)


@app.command("abort")
def abort_cmd(promotion_id: str, by: Annotated[str, typer.Option("--by")] = "") -> None:
    """Abort a rollout: the previous bundle becomes active again."""
    _command(promotion_id, "ABORT", by)


@app.command("costfit")
def costfit_cmd(from_: Annotated[str, typer.Option("--from", help="UTC date or epoch ms, inclusive")],
                to: Annotated[str, typer.Option("--to", help="UTC date or epoch ms, exclusive")],
                quantile: Annotated[float | None, typer.Option(help="quantile regression (e.g. 0.9) instead of OLS")]
                = None,
                by: Annotated[str, typer.Option("--by")] = "") -> None:
    """B10: fit slip_bps = g(spread, depth, vol, regime) from the fills of [from, to) into a draft bundle."""
    from chimera.backtest.data import DataError, parse_time
    from chimera.errors import PermanentError
    from chimera.handlers.config import curves

    store = _store()
    try:
        lo, hi = parse_time(from_, "--from"), parse_time(to, "--to")
        fitted = curves.fit(curves.rows_from_store(store, lo, hi), quantile=quantile)
        draft = curves.draft_bundle(store, fitted, now_ms=_now(), by=by, source=f"costfit:{from_}..{to}")
    except (DataError, PermanentError) as exc:
        _fail(str(exc))
    typer.echo(f"cost curve ({fitted['method']}, n={fitted['n']}): " + ", ".join(
        f"{k}={v:.4g}" for k, v in fitted["coef"].items()))
    typer.echo(f"draft bundle {draft.bundle_id}:{draft.rev}: simulate and promote it like any other "
               f"(chimera bundles simulate {draft.bundle_id}:{draft.rev})")
