"""S9 role: experiments (registry entry ``s9``). ``RunExperiment`` on ``exp:{commands}`` → ``run.on_run``
(one run per family at a time); ``RunTrial`` / ``FinalizeExperiment`` on ``exp:{trials}``: one hypothesis
per entry, taken by any replica (scale by replicas); the experiment document makes repeats harmless."""

from __future__ import annotations

from chimera.handlers.experiments import run
from chimera.schemas.messages import FinalizeExperiment, RunExperiment, RunTrial
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route

ROUTES = {
    RunExperiment: Route(run.on_run, lock=lambda env: f"s9:family:{env.payload.family}", idem=None),
    RunTrial: Route(run.on_trial, lock=lambda env: f"s9:trial:{env.payload.experiment_id}:{env.payload.hypothesis_id}"),
    FinalizeExperiment: Route(run.on_finalize, lock=lambda env: f"s9:finalize:{env.payload.experiment_id}"),
}

SPEC = HandlerSpec(role="s9", streams=lambda _s: [keys.EXP_COMMANDS, keys.EXP_TRIALS], routes=ROUTES,
                   description="S9 experiments: walk-forward, SPA, PSR/DSR, Benjamini-Hochberg; experiments, "
                               "hypotheses.status, ops:events, bt:{last_run_ts}")


def request_run(msg: RunExperiment) -> tuple[str, RunExperiment, str]:
    """What ``POST /v1/experiments/run`` XADDs: (stream, payload, idempotency key)."""
    return keys.EXP_COMMANDS, msg, f"exp:{msg.experiment_id}"
