"""S10's documents: bundles with their lint and dry-run, simulations, promotions (one per rollout).

``config_bundles/<bundle_id>:<rev>`` keeps the body under ``body`` (what ``workers/config.py`` reads)
next to S10's verdicts; new fields get defaults so older documents still decode.
"""

from __future__ import annotations

import msgspec


class LintIssue(msgspec.Struct, frozen=True, kw_only=True):
    severity: str  # "error" | "warning"
    code: str  # e.g. E_RULE, E_ACTION_RANGE, W_SIZE_MULT_GT_1, W_UNREACHABLE, W_SKIPS_MOST
    message: str
    path: str  # JSON path in the bundle, e.g. strategy.rules[2].when
    rule_id: str | None = None
    line: int | None = None  # 1-based line in the bundle file (when the file text is known)
    column: int | None = None  # 1-based column there
    expr_pos: int | None = None  # 0-based offset inside a rule's ``when`` text


class LintReport(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    errors: list[LintIssue] = []
    warnings: list[LintIssue] = []


class DryRunDiff(msgspec.Struct, frozen=True, kw_only=True):
    """The candidate vs the active bundle over the same stored signals (each decided on its own)."""

    signals: int
    window_from_ms: int = 0
    window_to_ms: int = 0
    active: str = ""  # "<bundle_id>:<rev>" the candidate was compared with ("" = none active)
    opens_active: int = 0
    opens_candidate: int = 0
    delta_trades: int = 0
    decisions_flipped: int = 0  # action or side differs
    flipped_pct: float = 0.0
    jaccard_opens: float = 1.0  # |A∩B| / |A∪B| of the signal ids opened (1 when both are empty)
    override_rate_active: float = 0.0  # share of sided decisions where a rule fired
    override_rate_candidate: float = 0.0
    rule_fire_counts: dict[str, int] = {}
    flipped_ids: list[str] = []  # first 50


class BundleDoc(msgspec.Struct, frozen=True, kw_only=True):
    bundle_id: str
    rev: int
    body: dict
    status: str = "DRAFT"  # DRAFT | ACTIVE | RETIRED | REJECTED
    sha256: str = ""
    lint: LintReport | None = None
    dry_run: DryRunDiff | None = None
    created_at: int = 0
    created_by: str = ""
    source: str = ""  # file path, "costfit:<month>", "rollout:<promotion_id>:<stage>"


class PromotionStep(msgspec.Struct, frozen=True, kw_only=True):
    at_ms: int
    from_state: str
    event: str
    to_state: str
    active: str = ""  # "<bundle_id>:<rev>" active after the step
    verdict: str = ""  # Successful | Failed | Inconclusive (analysis steps)
    metrics: dict = {}
    reasons: list[str] = []
    by: str = ""


class PromotionDoc(msgspec.Struct, frozen=True, kw_only=True):
    promotion_id: str
    bundle_id: str
    rev: int
    previous_bundle_id: str
    previous_rev: int
    state: str
    stage_rev: int = 0  # rev of the candidate bundle live in the current stage (0 in SHADOW)
    stage_started_ms: int = 0
    paused_state: str = ""  # the stage a PAUSED rollout resumes
    extensions: int = 0  # analysis intervals the current stage got because it was short of samples
    approved_by: str = ""
    requested_by: str = ""
    real_capital: bool = False
    guardrails: dict = {}
    steps: list[PromotionStep] = []
    created_at: int = 0
    updated_at: int = 0
