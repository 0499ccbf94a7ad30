"""S4's maker -> taker plan from the active bundle's fitted cost curve (B10, ``router.curves``) and the health
grade (B9), on real Redis (standalone + cluster) and the local futures venue through the official SDK.

Each expected figure is worked out by hand from ``config.curves.router_params``' documented policy (wait
500 ms per predicted bp within [500, 15000]; taker share 1 - s / 10 bp) and the bundle's health table; what
is asserted is what the venue holds: the orders by client id, their quantities, types and states.
"""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.router.role import SPEC as S4
from chimera.risk.state import RedisState
from chimera.schemas.messages import OrderIntent
from chimera.venues.binance.adapter import client_order_id
from chimera.workers.config import activate
from tests.integration.test_router_b1 import done, env, submit, venue  # noqa: F401 - fixtures
from tests.support.futures_venue import fut
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

QTY = Decimal("0.010")
ZERO_CURVE = {"spread_bp": 0.0, "size_to_depth": 0.0, "vol_bp": 0.0, "regime_EXTREME": 0.0, "regime_FROZEN": 0.0}


def run_maker(r, s, store, iid: str) -> dict:
    with ThreadWorker(S4, r, s, "s4-a", store):
        submit(r, OrderIntent(intent_id=iid, market="FUT", symbol="BTCUSDT", side="SELL", qty=QTY,
                              exec_policy="MakerThenTaker"))
        return wait_until(lambda: done(store, iid), timeout=30, message=f"{iid} done")


def venue_order(v, iid: str, leg: str):
    return fut(v).query("BTCUSDT", client_order_id(iid, leg))


def test_the_fitted_curve_sets_the_maker_window_and_the_taker_share(r, env, venue):  # noqa: F811
    s, store = env
    # Predicted taker slippage 2.5 bp: wait 2.5 x 500 = 1250 ms, send 1 - 2.5/10 = 75 % as taker at once.
    activate(store, "b", 1, {"router": {"maker_poll_ms": 100, "maker_wait_ms": 60_000,
                                        "curves": {"coef": {"const": 2.5, **ZERO_CURVE}}}})
    intent = run_maker(r, s, store, "cv-1")
    assert (intent["maker_wait_ms"], Decimal(intent["taker_share"])) == (1250, Decimal("0.75"))
    assert intent["maker_deadline"] - intent["updated_at"] <= 1250  # not the bundle's 60 s default
    tn, mk, tk = (venue_order(venue, "cv-1", leg) for leg in ("tn", "mk", "tk"))
    assert (tn.type, tn.qty, tn.status) == ("MARKET", Decimal("0.007"), "FILLED")  # 0.0075 down to the step
    assert (mk.type, mk.qty, mk.status) == ("LIMIT", Decimal("0.003"), "CANCELED")
    assert (tk.type, tk.qty, tk.status) == ("MARKET", Decimal("0.003"), "FILLED")  # the window ran out
    res = intent["result"]
    assert res["status"] == "FILLED" and Decimal(res["filled_qty"]) == QTY
    assert sum(Decimal(x["positionAmt"]) for x in fut(venue).position_risk("BTCUSDT")) == -QTY  # short 0.010


def test_without_a_curve_a_worse_health_grade_lengthens_the_wait_and_raises_the_taker_share(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"router": {"maker_poll_ms": 100, "maker_wait_ms": 400,
                                        "health_mult": {"ORANGE": {"wait": 2.0, "taker_share": 0.3}}}})
    green = run_maker(r, s, store, "hg-green")
    assert (green["maker_wait_ms"], Decimal(green["taker_share"])) == (400, Decimal(0))
    assert store.get("orders", "hg-green:tn") is None and venue_order(venue, "hg-green", "mk").qty == QTY
    RedisState(r).set_health("ORANGE", 600_000)
    orange = run_maker(r, s, store, "hg-orange")
    assert (orange["maker_wait_ms"], Decimal(orange["taker_share"])) == (800, Decimal("0.3"))
    tn, mk = venue_order(venue, "hg-orange", "tn"), venue_order(venue, "hg-orange", "mk")
    assert (tn.type, tn.qty, tn.status) == ("MARKET", Decimal("0.003"), "FILLED")
    assert (mk.qty, mk.status) == (Decimal("0.007"), "CANCELED")
    assert Decimal(orange["result"]["filled_qty"]) == QTY
