"""``chimera users``: people and service tokens for the gateway (S12)."""

from __future__ import annotations

from typing import Annotated

import typer

from chimera.gateway.auth import ROLES

app = typer.Typer(help="Gateway users (argon2 passwords) and service tokens.", no_args_is_help=True)


def _store():
    from chimera.errors import FatalError
    from chimera.ops.bootstrap import stores_from
    from chimera.ops.settings import load_settings

    try:
        return stores_from(load_settings())[0]
    except FatalError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _role(role: str) -> str:
    if role not in ROLES:
        typer.secho(f"error: --role {role!r}: use one of {', '.join(ROLES)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    return role


@app.command("add")
def add(name: str, role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
        password: Annotated[str | None, typer.Option(help="given password (min 8); default: generated and printed")]
        = None,
        service: Annotated[bool, typer.Option("--service", help="a machine caller: prints a service token")] = False,
        ) -> None:
    """Create (or reset) a user; prints the generated password or service token once."""
    from chimera.gateway.auth import add_service, add_user

    store = _store()
    try:
        if service:
            typer.echo(f"service token for {name} ({_role(role)}): {add_service(store, name, role)}")
            return
        got = add_user(store, name, _role(role), password)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"user {name} ({role}) saved" + ("" if password else f"; password: {got}"))


@app.command("list")
def list_users() -> None:
    """Names, roles and kinds (never a hash)."""
    from chimera.store.collections import USERS

    for u in _store().query(USERS, order_by="name"):
        typer.echo(f"{u['name']:<20} {u['role']:<8} {u.get('kind', 'human'):<8} "
                   f"{'disabled' if u.get('disabled') else 'active'}")


@app.command("disable")
def disable(name: str) -> None:
    """Refuse this user's logins, tokens and service token from now on."""
    from chimera.store.collections import USERS

    if not _store().update_if(USERS, name, {"disabled": True}, {"name": name}):
        typer.secho(f"error: no user {name!r}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(f"user {name} disabled")
