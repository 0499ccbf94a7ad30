"""Role registry: s1..s12 (and readable aliases) → the handler spec that runs them.

A role whose service is not built yet says so plainly instead of starting a worker that does
nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from chimera.errors import FatalError, NotYetImplemented
from chimera.workers.handler import HandlerSpec


@dataclass(frozen=True)
class Role:
    code: str
    name: str
    aliases: tuple[str, ...]
    spec_path: str | None  # "module:attribute" of the HandlerSpec, None while not built
    issue: str = ""


ROLES: tuple[Role, ...] = (
    Role("s1", "exchange connectors", ("connectors", "connector", "xchg"), "chimera.feeds.role:SPEC", "issue #4"),
    Role("s2", "feature generator", ("features", "feature"), "chimera.handlers.features.role:SPEC", "issue #4"),
    Role("s3", "strategy engine", ("strategy",), "chimera.handlers.strategy.role:SPEC", "issue #5"),
    Role("s4", "order router", ("router", "orders"), "chimera.handlers.router.role:SPEC", "issue #6"),
    Role("s5", "reconciler", ("reconciler", "recon"), "chimera.handlers.reconciler.role:SPEC", "issue #7"),
    Role("s6", "position manager", ("positions", "position"), "chimera.handlers.positions.role:SPEC", "issue #6"),
    Role("s7", "label backfill", ("labels",), "chimera.handlers.labels.role:SPEC", "issue #13"),
    Role("s8", "trade autopsy", ("autopsy",), "chimera.handlers.autopsy.role:SPEC", "issue #13"),
    Role("s9", "experiments", ("experiments", "hypotheses"), "chimera.handlers.experiments.role:SPEC", "issue #13"),
    Role("s10", "config bundles", ("config",), "chimera.handlers.config.role:SPEC", "issue #14"),
    Role("s11", "metrics and health", ("metrics", "health"), "chimera.handlers.health.role:SPEC", "issue #17"),
    Role("notifier", "notifier (Telegram, webhooks)", ("notify",), "chimera.handlers.notifier.role:SPEC", "issue #17"),
    Role("vpos", "virtual positions", ("virtual", "hedgestack"), "chimera.accounts.role:SPEC", "issue #16"),
    Role("s12", "gateway and web UI", ("gateway", "api"), "chimera.gateway.app:run", "issue #7"),
    Role("scheduler", "due-queue scheduler", ("sched",), "chimera.workers.scheduler_role:SPEC"),
    Role("noop", "no-op benchmark role", ("bench",), "chimera.handlers.noop:SPEC"),
    Role("sqlite-bench", "benchmark role writing one document", (), "chimera.handlers.noop:STORE_SPEC"),
)


def find_role(name: str) -> Role:
    name = name.strip().lower()
    for role in ROLES:
        if name == role.code or name in role.aliases:
            return role
    known = ", ".join(f"{r.code} ({'/'.join(r.aliases) or r.name})" for r in ROLES)
    raise FatalError(f"unknown role {name!r}; known roles: {known}")


def load_spec(name: str) -> HandlerSpec | Callable | None:
    """The role's entry point.

    A ``HandlerSpec`` runs in the consumer-group runtime; a callable ``run(settings, stop_event)``
    is a role with its own loop (S1's WebSocket connectors); None is the scheduler.
    """
    role = find_role(name)
    not_yet = NotYetImplemented(f"role {role.code} ({role.name}) is not implemented yet (planned in {role.issue})")
    if role.spec_path is None:
        raise not_yet
    module, _, attr = role.spec_path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise not_yet from None
        raise
    if not hasattr(mod, attr):
        raise not_yet
    return getattr(mod, attr)


def is_built(name: str) -> bool:
    try:
        load_spec(name)
        return True
    except NotYetImplemented:
        return False
