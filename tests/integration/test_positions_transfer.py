"""B8 step 1 through S6 and S1's treasury on real Redis (standalone + cluster) and the local venue:
free futures margin below ``positions.min_free_fut`` → one PENDING ``treasury_transfers`` document per
window; with auto-approve the transfer reaches the venue exactly once."""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.treasury.transfer import SPEC as TREASURY
from chimera.streams import keys
from chimera.venues.binance import wallet
from chimera.workers.config import activate
from tests.integration.test_router_b1 import env, fut, venue  # noqa: F401 - fixtures
from tests.support.polling import wait_until
from tests.support.positions import drained, tick
from tests.support.workers import ThreadWorker

RULES = {"limits": {"USDT": "1000"}, "directions": ["MAIN_UMFUTURE"]}


def free_usdt(venue) -> Decimal:  # noqa: F811
    """The venue's own answer, read straight through the SDK (not through the code under test)."""
    rows = [b.to_dict() for b in fut(venue).api.futures_account_balance_v3().data()]
    return next(Decimal(b["availableBalance"]) for b in rows if b["asset"] == "USDT")


def bundle(floor: Decimal, auto: bool) -> dict:
    return {"positions": {"min_free_fut": str(floor), "auto_approve_transfers": auto, "transfer_window_ms": 10**12,
                          "tick_ms": 0}, "treasury": RULES}


def ticks(r, *names: str) -> None:
    for n in names:
        tick(r, n)
    wait_until(lambda: drained(r, keys.POS_COMMANDS, "cg:s6"), timeout=20, message="ticks handled")


def test_low_free_margin_writes_one_pending_transfer_then_auto_approve_moves_it_once(r, env, venue):  # noqa: F811
    s, store = env
    free = free_usdt(venue)
    floor = free + Decimal("250.5")
    activate(store, "b", 1, bundle(floor, auto=False))
    with ThreadWorker(S6, r, s, "s6-a", store):
        ticks(r, "t1", "t2", "t3")
    [doc] = store.query("treasury_transfers")
    assert doc["state"] == "PENDING" and doc["requested_by"] == "s6" and doc["direction"] == "MAIN_UMFUTURE"
    assert Decimal(doc["need"]) == Decimal(doc["amount"]) == Decimal("250.5")
    assert Decimal(doc["free_fut"]) == free and doc["asset"] == "USDT"
    assert r.xlen(keys.TREASURY_COMMANDS) == 0  # waits for approval

    activate(store, "b", 2, bundle(floor, auto=True))
    with ThreadWorker(S6, r, s, "s6-b", store), ThreadWorker(TREASURY, r, s, "s1-t", store):
        ticks(r, "t4", "t5")
        wait_until(lambda: store.get("treasury_transfers", doc["_key"])["state"] == "SUCCEEDED", timeout=20,
                   message="transfer executed")
        ticks(r, "t6")
        wait_until(lambda: drained(r, keys.TREASURY_COMMANDS, "cg:s1-treasury"), timeout=20, message="S1 idle")
    key, secret = venue.keys["main"]
    moved = wallet.history(wallet.wallet_rest(venue.base_url, key, secret), "MAIN_UMFUTURE")
    assert [Decimal(str(m["amount"])) for m in moved] == [Decimal("250.5")]
    assert free_usdt(venue) == floor
    assert store.count("treasury_transfers") == 1


def test_enough_free_margin_writes_nothing(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, bundle(free_usdt(venue), auto=True))  # exactly at the floor: need = 0
    with ThreadWorker(S6, r, s, "s6-a", store):
        ticks(r, "t1")
    assert store.count("treasury_transfers") == 0 and r.xlen(keys.TREASURY_COMMANDS) == 0
