"""S10's service functions: what ``chimera bundles`` and the gateway's /v1/bundles, /v1/active call.

A bundle is immutable per ``(bundle_id, rev)``: creating the same body again returns the stored
document; a different body under an existing rev is refused (a new rev is the only way to change).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import msgspec

from chimera.errors import PermanentError
from chimera.handlers.config import dryrun
from chimera.handlers.config.lint import lint, lint_text
from chimera.schemas.documents.config import BundleDoc, DryRunDiff, LintReport
from chimera.store.collections import CONFIG_ACTIVE, CONFIG_BUNDLES, SIMULATIONS

DEFAULT_DAYS = 7.0


class BundleRejected(PermanentError):
    """The bundle has lint errors; ``report`` lists every one with its position."""

    def __init__(self, message: str, report: LintReport) -> None:
        super().__init__(message)
        self.report = report


def key(bundle_id: str, rev: int) -> str:
    return f"{bundle_id}:{rev}"


def sha256(body: Mapping) -> str:
    """Of the body without its ``rev`` (the same body re-sent with its rev is the same bundle)."""
    content = {k: v for k, v in body.items() if k != "rev"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def next_rev(store, bundle_id: str) -> int:
    rows = store.query(CONFIG_BUNDLES, {"bundle_id": bundle_id}, order_by="rev", desc=True, limit=1)
    return int(rows[0]["rev"]) + 1 if rows else 1


def active(store) -> dict | None:
    """``{bundle_id, rev}`` of the active bundle (GET /v1/active), None when nothing is active."""
    doc = store.get(CONFIG_ACTIVE, "active")
    return {"bundle_id": doc["bundle_id"], "rev": int(doc["rev"])} if doc else None


def get_bundle(store, bundle_id: str, rev: int) -> dict | None:
    doc = store.get(CONFIG_BUNDLES, key(bundle_id, rev))
    return {k: v for k, v in doc.items() if k != "_key"} if doc else None


def active_body(store) -> tuple[str, dict]:
    a = active(store)
    if a is None:
        return "", {}
    doc = get_bundle(store, a["bundle_id"], a["rev"]) or {}
    return key(a["bundle_id"], a["rev"]), dict(doc.get("body", doc))


def switch_active(store, bundle_id: str, rev: int) -> None:
    """Point ``config_active`` at a stored bundle (the caller publishes ConfigActivated)."""
    if store.get(CONFIG_BUNDLES, key(bundle_id, rev)) is None:
        raise PermanentError(f"bundle {bundle_id}:{rev} is not stored")
    store.upsert(CONFIG_ACTIVE, "active", {"bundle_id": bundle_id, "rev": rev})


def dry_run(store, body: Mapping, *, now_ms: int, days: float = DEFAULT_DAYS,
            limit: int = dryrun.MAX_SIGNALS) -> tuple[DryRunDiff, list[dict]]:
    """The candidate vs the active bundle over the stored signals; also the rule contexts (lint samples)."""
    sigs = dryrun.stored_signals(store, now_ms=now_ms, days=days, limit=limit)
    ref, act = active_body(store)
    cand = dryrun.decide_all(body, sigs, bundle_id="candidate")
    base = dryrun.decide_all(act, sigs, bundle_id="active") if act.get("strategy") else {}
    window = (sigs[0].t0, sigs[-1].t0) if sigs else (0, 0)
    samples = [c for s in sigs if (c := dryrun.rule_context(s, cand[s.signal_id])) is not None]
    return dryrun.diff(base, cand, active_ref=ref, window=window), samples


def check(body: Any, text: str | None = None) -> LintReport:
    return lint(body, text)


def create(store, body: Any = None, *, text: str | None = None, now_ms: int, by: str = "", source: str = "",
           days: float = DEFAULT_DAYS, status: str = "DRAFT") -> BundleDoc:
    """Lint (all errors with positions), dry-run, store under ``config_bundles`` (POST /v1/bundles)."""
    if text is not None:
        body, report = lint_text(text)
    else:
        report = lint(body, None)
    if not report.ok:
        raise BundleRejected(f"bundle has {len(report.errors)} lint error(s)", report)
    bundle_id = str(body.get("bundle_id") or "bundle")
    digest = sha256(body)
    rev = body.get("rev")
    if rev is not None:
        if not isinstance(rev, int) or isinstance(rev, bool) or rev < 1:
            raise BundleRejected("rev must be a positive integer", LintReport(ok=False))
        old = get_bundle(store, bundle_id, rev)
        if old is not None:
            if old.get("sha256") == digest:
                return msgspec.convert(old, BundleDoc, strict=False)
            raise PermanentError(f"bundle {bundle_id}:{rev} exists with another body; bundles are immutable: "
                                 f"drop 'rev' (the next free rev is {next_rev(store, bundle_id)}) or change it")
    else:
        rev = next_rev(store, bundle_id)
    diff, samples = dry_run(store, body, now_ms=now_ms, days=days)
    report = lint(body, text, samples=samples)  # again with the stored signals: skip-most / never-fired warnings
    doc = BundleDoc(bundle_id=bundle_id, rev=rev, body=dict(body), status=status, sha256=digest, lint=report,
                    dry_run=diff, created_at=now_ms, created_by=by, source=source)
    if not store.insert_if_absent(CONFIG_BUNDLES, key(bundle_id, rev), msgspec.to_builtins(doc)):
        raise PermanentError(f"bundle {bundle_id}:{rev} was created concurrently; retry without 'rev'")
    return doc


def latest_simulation(store, bundle_id: str, rev: int) -> dict | None:
    rows = store.query(SIMULATIONS, {"bundle_id": bundle_id, "rev": rev}, order_by="created_at", desc=True, limit=1)
    return rows[0] if rows else None
