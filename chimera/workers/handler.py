"""The handler contract: a spec of what a hop consumes, and the context it runs in.

A handler is ``handle(env, ctx) -> list[Emit]``: it validates, reads, computes, writes the
document store and *returns* what to publish. The runtime publishes, so a handler is testable
without Redis (FastStream's lesson).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chimera.schemas.envelope import Envelope
from chimera.streams.producer import Emit
from chimera.workers.clock import Clock
from chimera.workers.config import ActiveConfig


def by_idempotency_key(env: Envelope) -> str:
    return env.idempotency_key


@dataclass(frozen=True)
class HandlerSpec:
    role: str
    handle: Callable[[Envelope, Context], Sequence[Emit]]
    streams: Callable[[Any], list[str]]  # settings -> streams consumed
    idempotency: Callable[[Envelope], str] | None = by_idempotency_key
    lock: Callable[[Envelope], str | None] | None = None  # lock scope for this entry
    ordered: bool = False  # lease-owned streams, strict per-stream order
    # Ordered roles: called after each read batch, before its acks (e.g. S2 writes its state cache
    # once per batch). If it raises, the batch is not acked and the worker stops.
    end_batch: Callable[[Context], None] | None = None
    description: str = ""
    # Called once when a worker starts, before it consumes; what it returns is published (S5 kicks
    # its start-up run and arms its periodic timer here).
    on_start: Callable[[Context], Sequence[Emit]] | None = None


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
    services: dict[str, Any] = field(default_factory=dict)  # venue clients, caches...

    def now_ms(self) -> int:
        return self.clock.now_ms()
