"""S5 role: the reconciler's HandlerSpec (registry entry ``s5``)."""

from __future__ import annotations

from chimera.handlers.reconciler.core import handle
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec


def _streams(_settings) -> list[str]:
    return [keys.RECON_COMMANDS]


def _lock(env) -> str | None:
    # One run per account at a time: two runs would both "close" the same stale documents.
    return f"recon:{env.account_id or 'main'}"


# Each Reconcile (keyed by its run id) runs once; a new request is a new run.
SPEC = HandlerSpec(role="s5", handle=handle, streams=_streams, lock=_lock,
                   description="S5 reconciler: venue vs store diff both ways, repair, adopt, close unknowns")
