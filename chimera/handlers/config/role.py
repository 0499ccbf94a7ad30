"""Role s10, the config service: the promote command, operators' resume/abort and the rollout's own
analysis timers, all on ``cfg:{commands}``. Lint, create, dry-run, simulate and the cost-curve fit
are service functions (``service.py``, ``simulate.py``, ``curves.py``) the CLI and the gateway call.
"""

from __future__ import annotations

from chimera.handlers.config import promote
from chimera.schemas.messages import PromoteBundle, PromotionCommand, TimerFired
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route


def _streams(_settings) -> list[str]:
    return [keys.CFG_COMMANDS]


SPEC = HandlerSpec(
    role="s10",
    streams=_streams,
    routes={
        PromoteBundle: Route(promote.on_promote, lock=promote.lock_scope),
        PromotionCommand: Route(promote.on_command, lock=promote.lock_scope),
        TimerFired: Route(promote.on_timer, lock=promote.lock_scope),
    },
    description="S10 config service: staged rollout (shadow, canary, ramp), analysis gates, automatic rollback",
)
