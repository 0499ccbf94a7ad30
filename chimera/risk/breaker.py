"""The account circuit breaker on daily equity drawdown (trading-ci, issue #16 item 5). Pure: no I/O.

Per account and UTC trading day (by ``ctx.clock``, event time): the first equity sample of the day
is its opening equity; the drawdown is ``opening - equity``. Past the **soft** threshold new
entries stop (S3 refuses them with ``BREAKER_SOFT``); past the **hard** one the account's open
positions are flattened (and S3 refuses with ``BREAKER_HARD``). A trip is sticky for the day: the
level only climbs (``TRANSITIONS``); equity that recovers does not re-open trading the same day. The
next UTC day resets it to OK with a new opening equity. S3 reads the stored level and treats a
level recorded for an earlier day as OK, so the reset holds in event time even before the role's
next sample writes it.

Thresholds come from the bundle's ``account_risk`` section, per account overrides under
``account_risk.accounts.<id>``: ``soft_drawdown_pct`` / ``hard_drawdown_pct`` (of the opening
equity, defaults 3 and 5 when no absolute threshold is set) and/or ``soft_drawdown_usdt`` /
``hard_drawdown_usdt`` (absolute); whichever is crossed first trips. ``enabled: false`` turns the breaker off (snapshots continue).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from msgspec.structs import replace

from chimera.errors import PermanentError
from chimera.schemas.documents.account_risk import BreakerDoc, BreakerEvent

DAY_MS = 86_400_000
OK, SOFT, HARD = "OK", "SOFT", "HARD"
RANK = {OK: 0, SOFT: 1, HARD: 2}
# (from, to) -> the audit kind. Within a day the level only climbs; the day boundary resets.
TRANSITIONS: dict[tuple[str, str], str] = {
    (OK, SOFT): "TRIPPED_SOFT",
    (OK, HARD): "TRIPPED_HARD",
    (SOFT, HARD): "TRIPPED_HARD",
}
RESET = "RESET"


def trade_date(ms: int) -> str:
    """The UTC trading day of a clock time (``YYYY-MM-DD``)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


@dataclass(frozen=True)
class Thresholds:
    enabled: bool = True
    soft_pct: Decimal | None = Decimal(3)
    hard_pct: Decimal | None = Decimal(5)
    soft_usdt: Decimal | None = None
    hard_usdt: Decimal | None = None

    def level(self, drawdown: Decimal, pct: Decimal) -> tuple[str, str]:
        """(level reached, the threshold that decided it) for a drawdown in USDT and percent."""
        if not self.enabled:
            return OK, ""
        for lvl, usdt, p in ((HARD, self.hard_usdt, self.hard_pct), (SOFT, self.soft_usdt, self.soft_pct)):
            if usdt is not None and drawdown >= usdt:
                return lvl, f"{lvl.lower()}_drawdown_usdt={usdt}"
            if p is not None and pct >= p:
                return lvl, f"{lvl.lower()}_drawdown_pct={p}"
        return OK, ""


def _dec(section: Mapping[str, Any], name: str, default: Decimal | None) -> Decimal | None:
    v = section.get(name, default)
    if v is None:
        return None
    try:
        d = Decimal(str(v))
    except ArithmeticError as exc:
        raise PermanentError(f"bundle account_risk.{name}={v!r}: expected a number") from exc
    if d <= 0:
        raise PermanentError(f"bundle account_risk.{name}={v!r}: must be > 0")
    return d


def section(config) -> Mapping[str, Any]:
    raw = config.get("account_risk") if config is not None else None
    return raw if isinstance(raw, Mapping) else {}


def account_section(config, account_id: str) -> Mapping[str, Any]:
    """The ``account_risk`` section with the account's overrides applied."""
    base = dict(section(config))
    per = (base.pop("accounts", None) or {}).get(account_id) or {}
    return {**base, **per}


def thresholds(config, account_id: str) -> Thresholds:
    s = account_section(config, account_id)
    # The percent defaults apply only to a bundle that sets no absolute threshold.
    absolute = s.get("soft_drawdown_usdt") is not None or s.get("hard_drawdown_usdt") is not None
    soft_pct, hard_pct = (None, None) if absolute else (Decimal(3), Decimal(5))
    t = Thresholds(
        enabled=str(s.get("enabled", True)).lower() not in ("false", "0", "no"),
        soft_pct=_dec(s, "soft_drawdown_pct", soft_pct), hard_pct=_dec(s, "hard_drawdown_pct", hard_pct),
        soft_usdt=_dec(s, "soft_drawdown_usdt", None), hard_usdt=_dec(s, "hard_drawdown_usdt", None))
    for soft, hard, unit in ((t.soft_pct, t.hard_pct, "pct"), (t.soft_usdt, t.hard_usdt, "usdt")):
        if soft is not None and hard is not None and soft > hard:
            raise PermanentError(f"bundle account_risk: soft_drawdown_{unit} {soft} is above hard_drawdown_{unit} {hard}")
    return t


@dataclass(frozen=True)
class Step:
    """What one equity sample did to the breaker: the new document and the audit events (in order)."""

    doc: BreakerDoc
    events: tuple[BreakerEvent, ...]

    @property
    def tripped_hard(self) -> bool:
        return any(e.kind == "TRIPPED_HARD" for e in self.events)


def _event(doc: BreakerDoc, kind: str, previous: str, at: int, threshold: str = "") -> BreakerEvent:
    return BreakerEvent(account_id=doc.account_id, kind=kind, trade_date=doc.trade_date, at=at, previous=previous,
                        level=doc.level, opening_equity=doc.opening_equity, equity=doc.equity,
                        drawdown_usdt=doc.drawdown_usdt, drawdown_pct=doc.drawdown_pct, threshold=threshold)


def step(doc: BreakerDoc | None, account_id: str, equity: Decimal, now_ms: int, limits: Thresholds,
         opening_equity: Decimal | None = None) -> Step:
    """Apply one equity sample taken at ``now_ms``.

    ``opening_equity``: the day's recorded opening (``account_snapshots/<account>:<day>:open``); this
    sample's equity when there is none yet.
    """
    day = trade_date(now_ms)
    events: list[BreakerEvent] = []
    if doc is None or doc.trade_date != day:
        prev = doc.level if doc is not None else OK
        doc = BreakerDoc(account_id=account_id, trade_date=day, opening_equity=opening_equity or equity,
                         version=(doc.version if doc is not None else 0))
        if prev != OK:
            events.append(_event(doc, RESET, prev, now_ms))
    opening = doc.opening_equity if doc.opening_equity is not None else equity
    drawdown = max(Decimal(0), opening - equity)
    pct = (drawdown / opening * 100).quantize(Decimal("0.0001")) if opening > 0 else Decimal(0)
    doc = replace(doc, opening_equity=opening, equity=equity, drawdown_usdt=drawdown, drawdown_pct=pct,
                  sampled_at=now_ms, version=doc.version + 1)
    reached, why = limits.level(drawdown, pct)
    if RANK[reached] > RANK[doc.level]:
        kind = TRANSITIONS[(doc.level, reached)]
        previous = doc.level
        doc = replace(doc, level=reached, soft_at=doc.soft_at or now_ms,
                      hard_at=now_ms if reached == HARD else doc.hard_at)
        events.append(_event(doc, kind, previous, now_ms, why))
    return Step(doc, tuple(events))


def level_for_entry(doc: BreakerDoc | None, as_of_ms: int) -> str:
    """The level that applies to an entry decided at ``as_of_ms``: a trip of an earlier day is reset."""
    if doc is None or doc.trade_date != trade_date(as_of_ms):
        return OK
    return doc.level
