"""The breaker's arithmetic and transitions by hand (chimera/risk/breaker.py): pure, no I/O."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from chimera.errors import PermanentError
from chimera.risk import breaker
from chimera.workers.config import ActiveConfig

DAY1 = 1_764_720_000_000  # 2025-12-03 00:00 UTC
T = breaker.Thresholds(soft_pct=D(3), hard_pct=D(5))


def test_trade_date_is_the_utc_day():
    assert breaker.trade_date(DAY1) == "2025-12-03"
    assert breaker.trade_date(DAY1 - 1) == "2025-12-02"


def test_soft_then_hard_then_sticky_then_reset_next_day():
    s = breaker.step(None, "main", D(10_000), DAY1 + 1000, T)
    assert (s.doc.level, s.doc.opening_equity, s.events) == ("OK", D(10_000), ())
    s = breaker.step(s.doc, "main", D(9_690), DAY1 + 2000, T)  # -3.1 %
    assert s.doc.level == "SOFT" and [e.kind for e in s.events] == ["TRIPPED_SOFT"]
    assert s.doc.drawdown_usdt == D(310) and s.doc.drawdown_pct == D("3.1000") and s.doc.soft_at == DAY1 + 2000
    s = breaker.step(s.doc, "main", D(9_400), DAY1 + 3000, T)  # -6 %
    assert s.doc.level == "HARD" and s.tripped_hard and s.events[0].previous == "SOFT"
    s = breaker.step(s.doc, "main", D(10_500), DAY1 + 4000, T)  # recovered: still HARD today
    assert s.doc.level == "HARD" and s.events == ()
    nxt = breaker.step(s.doc, "main", D(10_500), DAY1 + breaker.DAY_MS + 5, T)
    assert nxt.doc.level == "OK" and nxt.doc.trade_date == "2025-12-04" and nxt.doc.opening_equity == D(10_500)
    assert [(e.kind, e.previous, e.level) for e in nxt.events] == [("RESET", "HARD", "OK")]


def test_a_jump_straight_past_hard_trips_hard_once():
    s = breaker.step(None, "sub1", D(1000), DAY1, T, opening_equity=D(1100))
    assert s.doc.level == "HARD" and [e.kind for e in s.events] == ["TRIPPED_HARD"]
    assert s.events[0].threshold == "hard_drawdown_pct=5"


def test_entry_level_of_an_earlier_day_is_reset_in_event_time():
    s = breaker.step(None, "main", D(100), DAY1, breaker.Thresholds(soft_pct=None, hard_pct=None, soft_usdt=D(5), hard_usdt=D(10)),
                     D(106))
    assert breaker.level_for_entry(s.doc, DAY1 + 10) == "SOFT"
    assert breaker.level_for_entry(s.doc, DAY1 + breaker.DAY_MS) == "OK"
    assert breaker.level_for_entry(None, DAY1) == "OK"


def test_thresholds_from_the_bundle_with_account_overrides_and_clear_errors():
    cfg = ActiveConfig(bundle={"account_risk": {"soft_drawdown_usdt": "50", "hard_drawdown_usdt": 100,
                                                "accounts": {"sub1": {"soft_drawdown_pct": 1}}}})
    main, sub1 = breaker.thresholds(cfg, "main"), breaker.thresholds(cfg, "sub1")
    assert (main.soft_usdt, main.hard_usdt, main.soft_pct, main.hard_pct) == (D(50), D(100), None, None)
    assert sub1.soft_pct == D(1) and sub1.soft_usdt == D(50)
    assert breaker.thresholds(ActiveConfig(bundle={"account_risk": {}}), "x").soft_pct == D(3)
    with pytest.raises(PermanentError, match="soft_drawdown_pct 6 is above hard_drawdown_pct 5"):
        breaker.thresholds(ActiveConfig(bundle={"account_risk": {"soft_drawdown_pct": 6}}), "main")
    with pytest.raises(PermanentError, match="account_risk.hard_drawdown_usdt"):
        breaker.thresholds(ActiveConfig(bundle={"account_risk": {"hard_drawdown_usdt": "x"}}), "main")
    assert breaker.thresholds(ActiveConfig(bundle={"account_risk": {"enabled": False}}), "main").level(D(1e6), D(99)) \
        == ("OK", "")
