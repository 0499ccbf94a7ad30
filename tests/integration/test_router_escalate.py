"""CancelOrder with escalate_to_market: cancel what is live, then close what the intent left open with one
reduce-only MARKET child intent (``<intent_id>:escalate``), exactly once however often the cancel arrives.
Real Redis (standalone + cluster), the local venue replaying the real 2023-04-04 BTCUSDT recording."""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.router.role import SPEC as S4
from chimera.schemas.messages import CancelOrder, OrderIntent
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import client_order_id
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from tests.integration.test_router_b1 import (  # noqa: F401 - fixtures
    armed_timers,
    done,
    env,
    fut,
    submit,
    venue,
    venue_orders,
)
from tests.support.polling import group_caught_up, wait_until
from tests.support.workers import ThreadWorker


def cancel(r, intent_id: str, key: str, escalate: bool = True) -> None:
    Producer(r, WallClock()).publish(keys.ORD_COMMANDS, CancelOrder(intent_id=intent_id, escalate_to_market=escalate,
                                                                    reason="test"), idempotency_key=key)


def position(v) -> Decimal:
    return sum((Decimal(p["positionAmt"]) for p in fut(v).position_risk("BTCUSDT")), Decimal(0))


def test_escalate_cancels_the_rest_and_closes_the_filled_part_once(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"router": {"twap_slices": 4, "twap_interval_ms": 60_000}})
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S4, r, s, "s4-b", store):
        submit(r, OrderIntent(intent_id="esc-1", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.020"),
                              exec_policy="TWAP"))
        wait_until(lambda: (store.get("orders", "esc-1:tw0") or {}).get("status") == "FILLED", timeout=20,
                   message="first slice filled")
        assert position(venue) == Decimal("0.005")
        # The same cancel three times (a retrying caller): one close at the venue.
        for key in ("c1", "c2", "c3"):
            cancel(r, "esc-1", key)
        child = wait_until(lambda: done(store, "esc-1:escalate"), timeout=20, message="escalated close")
        wait_until(lambda: group_caught_up(r, keys.ORD_COMMANDS, keys.group("s4")), timeout=20,
                   message="all cancels handled")
    assert child["side"] == "SELL" and child["reduce_only"] and child["purpose"] == "EXIT"
    assert Decimal(child["qty"]) == Decimal("0.005") and child["parent_intent_id"] == "esc-1"
    assert child["result"]["status"] == "FILLED"
    parent = store.get("order_intents", "esc-1")
    assert parent["result"]["status"] == "CANCELED" and Decimal(parent["result"]["filled_qty"]) == Decimal("0.005")
    assert position(venue) == 0
    assert venue_orders(venue)[client_order_id("esc-1:escalate", "mkt")] == 1
    assert sorted(c for c in venue_orders(venue, "ctw")) == [client_order_id("esc-1", "tw0")]  # no later slice
    assert armed_timers(r, "router:twap_slice:esc-1:") == []  # the cancel disarmed the remaining slices
    assert store.get("strategy_events", "ESCALATE:esc-1")["child_intent_id"] == "esc-1:escalate"


def test_escalate_with_nothing_filled_only_cancels(r, env, venue):  # noqa: F811
    s, store = env
    far = (fut(venue).book("BTCUSDT").mid * Decimal("0.9")).quantize(Decimal("0.1"))
    with ThreadWorker(S4, r, s, "s4-a", store):
        submit(r, OrderIntent(intent_id="esc-2", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.004"),
                              exec_policy="LIMIT", price=far))
        wait_until(lambda: (store.get("orders", "esc-2:lmt") or {}).get("status") == "ACCEPTED", timeout=20,
                   message="limit resting")
        cancel(r, "esc-2", "c1")
        wait_until(lambda: (store.get("orders", "esc-2:lmt") or {}).get("status") == "CANCELED", timeout=20,
                   message="limit cancelled")
        wait_until(lambda: group_caught_up(r, keys.ORD_COMMANDS, keys.group("s4")), timeout=20,
                   message="cancel handled")
    assert fut(venue).query("BTCUSDT", client_order_id("esc-2", "lmt")).status == "CANCELED"
    assert store.get("order_intents", "esc-2:escalate") is None
    assert client_order_id("esc-2:escalate", "mkt") not in venue_orders(venue)
    assert position(venue) == 0
