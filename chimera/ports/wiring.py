"""The ports a handler reaches through its context (``ctx.risk``, ``ctx.features``, ``ctx.venues``,
``ctx.exec_metrics``, ``ctx.health_inputs``, ``ctx.marks``, ``ctx.bt_marks``), built once per worker: Redis implementations on the Redis runtime, in-memory ones on the
in-process runtime's clock (ARCHITECTURE §1, §5)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from chimera.ports.exec_metrics import ExecMetrics, MemoryExecMetrics, RedisExecMetrics
from chimera.ports.features import FeatureState, MemoryFeatureState, RedisFeatureState
from chimera.ports.health_inputs import HealthInputs, MemoryHealthInputs, RedisHealthInputs
from chimera.ports.research_marks import Marks, MemoryMarks, RedisMarks
from chimera.ports.venues import Venues
from chimera.risk.state import MemoryState, RedisState, RiskState
from chimera.streams import keys


@dataclass(frozen=True)
class Ports:
    risk: RiskState
    features: FeatureState
    venues: Venues
    exec_metrics: ExecMetrics  # S4's counters and ack latencies
    health_inputs: HealthInputs  # S11's view of consumer-group lag
    marks: Marks  # S7's high-water marks (last backfilled bar per horizon)
    bt_marks: Marks  # S9's high-water marks (last experiment run per family)

    def as_kwargs(self) -> dict[str, Any]:
        """The ports as ``Context`` fields (same names)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def redis_ports(r, settings: Any = None) -> Ports:
    return Ports(risk=RedisState(r), features=RedisFeatureState(r), venues=Venues(settings),
                 exec_metrics=RedisExecMetrics(r), health_inputs=RedisHealthInputs(r),
                 marks=RedisMarks(r, keys.LABELS_LAST_BACKFILL), bt_marks=RedisMarks(r, keys.BT_LAST_RUN))


def memory_ports(clock, settings: Any = None, venues: Venues | None = None) -> Ports:
    return Ports(risk=MemoryState(clock.now_ms), features=MemoryFeatureState(),
                 venues=venues if venues is not None else Venues(settings),
                 exec_metrics=MemoryExecMetrics(), health_inputs=MemoryHealthInputs(),
                 marks=MemoryMarks(), bt_marks=MemoryMarks())
