"""S4's plan under the cost curve's regime term and the health grade, on the in-process runtime against the
venue engine (the Redis + SDK version of the curve and health cases is tests/integration/test_router_cost_health.py).
Expected figures by hand from ``config.curves.router_params``' policy; assertions read the venue's orders."""

from __future__ import annotations

from decimal import Decimal

from chimera.schemas.messages import OrderIntent
from chimera.schemas.strategy import RegimeState
from tests.unit.test_router_inprocess import SYM, T0, Rig

DAY = 86_400_000
COEF = {"const": 2.0, "spread_bp": 0.0, "size_to_depth": 0.0, "vol_bp": 0.0, "regime_EXTREME": 6.0,
        "regime_FROZEN": 0.0}


def maker(rig: Rig, iid: str) -> None:
    rig.submit(OrderIntent(intent_id=iid, market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.010"),
                           exec_policy="MakerThenTaker"))


def test_the_regime_term_of_the_curve_moves_the_plan():
    rig = Rig({"maker_poll_ms": 100, "curves": {"coef": COEF}})
    maker(rig, "n-1")  # NORMAL: s = 2 bp -> wait 1000 ms, taker 1 - 2/10 = 80 %
    assert (rig.intent("n-1")["maker_wait_ms"], rig.order("n-1", "tn").qty, rig.order("n-1", "mk").qty) == \
        (1000, Decimal("0.008"), Decimal("0.002"))
    rig.rt.ports.risk.set_regime(RegimeState(regime="EXTREME"), DAY)
    maker(rig, "x-1")  # EXTREME: s = 8 bp -> wait 4000 ms, taker 20 %
    assert (rig.intent("x-1")["maker_wait_ms"], rig.order("x-1", "tn").qty, rig.order("x-1", "mk").qty) == \
        (4000, Decimal("0.002"), Decimal("0.008"))
    assert rig.order("x-1", "tn").status == "FILLED" and rig.order("x-1", "mk").status == "NEW"
    rig.rt.advance_to(T0 + 3900)
    assert rig.order("x-1", "mk").status == "NEW"  # still inside its 4 s window
    rig.rt.advance_to(T0 + 4100)
    assert rig.order("x-1", "mk").status == "CANCELED" and rig.order("x-1", "tk").qty == Decimal("0.008")
    assert rig.position() == Decimal("0.020")


def test_twap_slices_spread_out_under_a_worse_health_grade():
    rig = Rig({"twap_slices": 4, "twap_interval_ms": 1000})
    rig.rt.ports.risk.set_health("ORANGE", DAY)  # default router.health_mult: ORANGE wait x2
    rig.submit(OrderIntent(intent_id="tw-h", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.020"),
                           exec_policy="TWAP"))
    rig.rt.advance_to(T0 + 10_000)
    assert [rig.order("tw-h", f"tw{i}").update_time for i in range(4)] == [T0, T0 + 2000, T0 + 4000, T0 + 6000]
    assert rig.position() == Decimal("0.020")
