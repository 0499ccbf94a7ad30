"""``chimera audit``: check the gateway's hash-chained ``audit_log``."""

from __future__ import annotations

import typer

app = typer.Typer(help="The append-only, hash-chained audit log (S12).", no_args_is_help=True)


@app.command("verify")
def verify() -> None:
    """Recompute every entry's SHA-256 and its link to the previous one; exit 1 on the first break."""
    from chimera.gateway.audit import verify as check
    from chimera.ops.users import _store

    ok, n, problem = check(_store())
    if not ok:
        typer.secho(f"audit_log BROKEN after {n} good entries: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"audit_log OK: {n} entries, chain intact")


@app.command("tail")
def tail(n: int = 20) -> None:
    """The last N entries (who, what, when, status)."""
    from chimera.gateway.audit import AUDIT_LOG
    from chimera.ops.users import _store

    for e in reversed(_store().query(AUDIT_LOG, order_by="seq", desc=True, limit=n)):
        typer.echo(f"{e['seq']:>6} {e['at']} {e['actor']:<12} {e['role']:<7} {e['action']:<18} {e['detail']}")
