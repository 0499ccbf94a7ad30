"""The ports a handler reaches through its context (``ctx.risk``, ``ctx.features``, ``ctx.venues``),
built once per worker: Redis implementations on the Redis runtime, in-memory ones on the
in-process runtime's clock (ARCHITECTURE §1, §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chimera.ports.features import FeatureState, MemoryFeatureState, RedisFeatureState
from chimera.ports.venues import Venues
from chimera.risk.state import MemoryState, RedisState, RiskState


@dataclass(frozen=True)
class Ports:
    risk: RiskState
    features: FeatureState
    venues: Venues


def redis_ports(r, settings: Any = None) -> Ports:
    return Ports(risk=RedisState(r), features=RedisFeatureState(r), venues=Venues(settings))


def memory_ports(clock, settings: Any = None, venues: Venues | None = None) -> Ports:
    return Ports(risk=MemoryState(clock.now_ms), features=MemoryFeatureState(),
                 venues=venues if venues is not None else Venues(settings))
