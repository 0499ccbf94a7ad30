"""Role registry: s1..s12 (and readable aliases) → the handler spec that runs them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from chimera.errors import FatalError
from chimera.workers.handler import HandlerSpec


@dataclass(frozen=True)
class Role:
    code: str
    name: str
    aliases: tuple[str, ...]
    spec_path: str  # "module:attribute" of the HandlerSpec (or the role's own loop)


ROLES: tuple[Role, ...] = (
    Role("s1", "exchange connectors", ("connectors", "connector", "xchg"), "chimera.feeds.role:SPEC"),
    Role("s2", "feature generator", ("features", "feature"), "chimera.handlers.features.role:SPEC"),
    Role("s3", "strategy engine", ("strategy",), "chimera.handlers.strategy.role:SPEC"),
    Role("s4", "order router", ("router", "orders"), "chimera.handlers.router.role:SPEC"),
    Role("s5", "reconciler", ("reconciler", "recon"), "chimera.handlers.reconciler.role:SPEC"),
    Role("s6", "position manager", ("positions", "position"), "chimera.handlers.positions.role:SPEC"),
    Role("s7", "label backfill", ("labels",), "chimera.handlers.labels.role:SPEC"),
    Role("s8", "trade autopsy", ("autopsy",), "chimera.handlers.autopsy.role:SPEC"),
    Role("s9", "experiments", ("experiments", "hypotheses"), "chimera.handlers.experiments.role:SPEC"),
    Role("s10", "config bundles", ("config",), "chimera.handlers.config.role:SPEC"),
    Role("s11", "metrics and health", ("metrics", "health"), "chimera.handlers.health.role:SPEC"),
    Role("notifier", "notifier (Telegram, webhooks)", ("notify",), "chimera.handlers.notifier.role:SPEC"),
    Role("vpos", "virtual positions", ("virtual", "hedgestack"), "chimera.accounts.role:SPEC"),
    Role("s12", "gateway and web UI", ("gateway", "api"), "chimera.gateway.app:run"),
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
    module, _, attr = find_role(name).spec_path.partition(":")
    return getattr(importlib.import_module(module), attr)
