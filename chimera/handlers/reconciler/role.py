"""S5 role: the reconciler's route table (registry entry ``s5``)."""

from __future__ import annotations

from chimera.handlers.reconciler.core import run_reconcile
from chimera.handlers.reconciler.periodic import on_start
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Reconcile
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route


def _streams(_settings) -> list[str]:
    return [keys.RECON_COMMANDS]


def _lock(env: Envelope) -> str:
    # One run per account at a time: two runs would both "close" the same stale documents.
    return keys.lock_recon(env.account_id or "main")


# Each Reconcile (keyed by its run id) runs once; a new request is a new run. A starting worker
# reconciles at once and arms the periodic run (periodic.py).
SPEC = HandlerSpec(role="s5", streams=_streams, routes={Reconcile: Route(run_reconcile, lock=_lock)},
                   on_start=on_start,
                   description="S5 reconciler: venue vs store diff both ways, repair, adopt, close unknowns")
