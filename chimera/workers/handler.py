"""The handler contract: a role's route table, and the context a handler runs in.

A role declares once what it consumes: ``{MessageType: Route(handler, lock=..., idem=...)}``.
A handler is ``handler(env, ctx) -> list[Emit | CancelTimer]``: it validates, reads, computes,
writes the document store and *returns* what to publish and which timers to arm or disarm. The
runtime publishes, so a handler is testable without Redis (FastStream's lesson). A payload type
the role does not route is a permanent error: the runtime dead-letters it with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chimera.errors import PermanentError
from chimera.ports.exec_metrics import ExecMetrics
from chimera.ports.features import FeatureState
from chimera.ports.health_inputs import HealthInputs
from chimera.ports.research_marks import Marks
from chimera.ports.venues import Venues
from chimera.ports.wiring import memory_ports, redis_ports
from chimera.risk.state import RiskState
from chimera.schemas.envelope import Envelope
from chimera.streams.producer import CancelTimer, Emit
from chimera.workers.clock import Clock
from chimera.workers.config import ActiveConfig


def by_idempotency_key(env: Envelope) -> str:
    return env.idempotency_key


Handler = Callable[[Envelope, "Context"], Sequence[Emit | CancelTimer]]


@dataclass(frozen=True)
class Route:
    """How a role handles one message type.

    ``lock``: the TTL-lock scope for the entry (a name from ``streams/keys.py``), or None.
    ``idem``: the done-marker key; None means "no marker" (the handler is idempotent by itself,
    e.g. a repeated command must re-emit its stored result).
    """

    handler: Handler
    lock: Callable[[Envelope], str | None] | None = None
    idem: Callable[[Envelope], str | None] | None = by_idempotency_key


def _unrouted(role: str, env: Envelope) -> PermanentError:
    return PermanentError(f"role {role} has no route for message type {env.type}")


@dataclass(frozen=True)
class HandlerSpec:
    role: str
    streams: Callable[[Any], list[str]]  # settings -> streams consumed
    routes: Mapping[type, Route] | None = None
    # Without ``routes``: one handler for every type (benchmark and test roles).
    handle: Handler | None = None
    idempotency: Callable[[Envelope], str] | None = by_idempotency_key
    lock: Callable[[Envelope], str | None] | None = None  # lock scope for this entry
    ordered: bool = False  # lease-owned streams, strict per-stream order
    # Commit each entry's emits and ack as soon as it is handled instead of once per read batch. For
    # roles that act on a venue (S4): an entry takes a round trip or more there, so a batch can take
    # seconds, and a result must not wait behind the rest of it (S5 reads a filled leg whose result is
    # not out after its settle window as an orphan, adopts it and degrades trading).
    commit_each: bool = False
    # Ordered roles: called after each read batch, before its acks (e.g. S2 writes its state cache
    # once per batch). If it raises, the batch is not acked and the worker stops.
    end_batch: Callable[[Context], None] | None = None
    description: str = ""
    # Called once when a worker starts, before it consumes; what it returns is published (S5 kicks
    # its start-up run and arms its periodic timer here).
    on_start: Callable[[Context], Sequence[Emit]] | None = None

    def __post_init__(self) -> None:
        if self.routes is None:
            if self.handle is None:
                raise ValueError(f"role {self.role}: give routes or handle")
            return
        if self.handle is not None:
            raise ValueError(f"role {self.role}: give routes or handle, not both")
        routes, role = dict(self.routes), self.role

        def route_of(env: Envelope) -> Route:
            r = routes.get(type(env.payload))
            if r is None:
                raise _unrouted(role, env)
            return r

        def handle(env: Envelope, ctx: Context):
            return route_of(env).handler(env, ctx)

        def lock(env: Envelope) -> str | None:
            r = routes.get(type(env.payload))
            return r.lock(env) if r is not None and r.lock is not None else None

        def idempotency(env: Envelope) -> str | None:
            r = routes.get(type(env.payload))
            return r.idem(env) if r is not None and r.idem is not None else None

        # The runtime calls these three; deriving them from the table keeps one dispatch per role.
        object.__setattr__(self, "handle", handle)
        object.__setattr__(self, "lock", lock)
        object.__setattr__(self, "idempotency", idempotency)
        object.__setattr__(self, "route_of", route_of)


@dataclass(slots=True)
class Context:
    clock: Clock
    store: Any  # DocumentStore
    config: ActiveConfig
    objects: Any = None  # ObjectStore
    redis: Any = None  # None in the in-process runtime
    settings: Any = None
    role: str = ""
    consumer: str = ""
    fence: int = 0  # fencing token of the lock held for this entry (0: no lock)
    services: dict[str, Any] = field(default_factory=dict)  # per-worker memos of a role (not shared state)
    # Ports (chimera/ports, chimera/risk): the runtimes pass the ones they built once per worker.
    risk: RiskState | None = None  # kill switch, health, regime, budget/concurrency reservation
    features: FeatureState | None = None  # S2's engine cache and the closed-bar store
    venues: Venues | None = None  # venue clients by account
    exec_metrics: ExecMetrics | None = None  # S4's execution counters and ack latencies
    health_inputs: HealthInputs | None = None  # consumer-group lag as S11 sees it
    marks: Marks | None = None  # S7's backfill high-water marks
    bt_marks: Marks | None = None  # S9's experiment high-water marks

    def __post_init__(self) -> None:
        # A context built by hand (tests, tools) gets the Redis ports when it was given a client,
        # else in-memory ones on its clock.
        names = ("risk", "features", "venues", "exec_metrics", "health_inputs", "marks", "bt_marks")
        if any(getattr(self, n) is None for n in names):
            ports = redis_ports(self.redis, self.settings) if self.redis is not None else memory_ports(
                self.clock, self.settings)
            for n in names:
                if getattr(self, n) is None:
                    setattr(self, n, getattr(ports, n))

    def now_ms(self) -> int:
        return self.clock.now_ms()
