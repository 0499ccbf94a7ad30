"""S10's ``SimulateBundle``: the gateway's ``POST /v1/simulate`` runs here, on the worker, not in the
HTTP request (a simulation is several in-process backtests: tens of seconds).

``simulations/<simulation_id>`` moves RUNNING → DONE (the simulate service's document: KPI table
candidate vs active, sensitivity, robustness) or FAILED (``error`` says why: a bad data spec, an
unknown bundle, lint errors of an inline body). Bad input is the caller's mistake, recorded and not
retried; the worker goes on. Idempotent: a redelivered command finds DONE/FAILED and does nothing;
an inline body is looked up by its hash before it is created, so a retry never adds a rev.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chimera.errors import PermanentError
from chimera.handlers.config import service, simulate
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import SimulateBundle
from chimera.store.collections import CONFIG_BUNDLES, SIMULATIONS

FINAL = ("DONE", "FAILED")


def request_of(msg: SimulateBundle) -> dict[str, Any]:
    """What was asked (kept on every state of the document)."""
    return {"bundle_id": msg.bundle_id, "rev": msg.rev, "inline": msg.bundle is not None, "data": list(msg.data),
            "from": msg.from_text, "to": msg.to_text, "eps": msg.eps, "requested_by": msg.requested_by}


def _candidate(store, msg: SimulateBundle, now_ms: int) -> tuple[str, int]:
    if msg.bundle is None:
        return msg.bundle_id, msg.rev
    body = dict(msg.bundle)
    bid = str(body.get("bundle_id") or "bundle")
    same = store.query(CONFIG_BUNDLES, {"bundle_id": bid, "sha256": service.sha256(body)}, order_by="rev", limit=1)
    if same:
        return bid, int(same[0]["rev"])
    doc = service.create(store, body, now_ms=now_ms, by=msg.requested_by, source="simulate")
    return doc.bundle_id, doc.rev


def on_simulate(env: Envelope, ctx) -> list:
    from chimera.backtest.data import DataError

    msg: SimulateBundle = env.payload
    store, sid = ctx.store, msg.simulation_id
    old = store.get(SIMULATIONS, sid)
    if old is not None and old.get("status") in FINAL:
        return []
    started = ctx.now_ms()
    base = {"simulation_id": sid, "request": request_of(msg), "queued_at": env.event_time or started,
            "started_at": started}
    # No top-level bundle_id/rev before DONE: service.latest_simulation (the promote gate) must only
    # ever find finished simulations.
    store.upsert(SIMULATIONS, sid, {**base, "status": "RUNNING"})
    try:
        bid, rev = _candidate(store, msg, started)
        doc = simulate.simulate(store, bid, rev, data=list(msg.data), from_text=msg.from_text or None,
                                to_text=msg.to_text or None, eps=msg.eps, now_ms=ctx.now_ms(), by=msg.requested_by)
    except service.BundleRejected as exc:
        _failed(store, base, str(exc), ctx.now_ms(), errors=msgspec.to_builtins(exc.report.errors))
        return []
    except (DataError, PermanentError, ValueError) as exc:
        _failed(store, base, str(exc), ctx.now_ms())
        return []
    # The service keeps its own content-addressed copy (sim_id); this one answers the caller's id.
    store.upsert(SIMULATIONS, sid, {**doc, **base, "status": "DONE", "finished_at": ctx.now_ms()})
    return []


def _failed(store, base: dict, error: str, now_ms: int, errors: list | None = None) -> None:
    store.upsert(SIMULATIONS, base["simulation_id"], {**base, "status": "FAILED", "error": error,
                                                      "errors": errors or [], "finished_at": now_ms})
