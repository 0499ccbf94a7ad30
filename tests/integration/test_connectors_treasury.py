"""S1 treasury against the local venue (official wallet SDK): exactly-once transfers."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest

from chimera.errors import RetryableError
from chimera.handlers.treasury import transfer as treasury
from chimera.ports.venues import Venues
from chimera.schemas.messages import TransferRequest
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Emit, envelope_for
from chimera.venues.binance import wallet
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context
from tests.support.local_venue import running_venue

RULES = {"limits": {"USDT": "500"}, "directions": ["MAIN_UMFUTURE"]}


@pytest.fixture
def venue(tmp_path):
    with running_venue(tmp_path, data=[]) as v:
        yield v


@pytest.fixture
def ctx(venue, tmp_path):
    key, secret = venue.keys["main"]
    settings = SimpleNamespace(extra={"treasury": RULES}, venue_url=venue.base_url, accounts_file="", venue="paper")
    return Context(clock=ManualClock(1_000), store=open_store(f"sqlite:///{tmp_path}/s.sqlite"), config=ActiveConfig(),
                   settings=settings, venues=Venues(wallets={"main": wallet.wallet_rest(venue.base_url, key, secret)}))


def request(tid: str, amount: str, direction: str = "MAIN_UMFUTURE", asset: str = "USDT"):
    req = TransferRequest(transfer_id=tid, asset=asset, amount=Decimal(amount), direction=direction)
    return envelope_for(Emit(keys.TREASURY_COMMANDS, req, tid), parent=None, now_ms=1_000)


def moved(ctx) -> list[dict]:
    return wallet.history(ctx.venues.wallet("main"), "MAIN_UMFUTURE")


def result(emits):
    (resp,) = [e.payload for e in emits if e.stream == keys.TREASURY_RESULTS]
    audit = [e.payload.kind for e in emits if e.stream == keys.OPS_EVENTS]
    return resp, audit


def test_same_transfer_id_twice_moves_money_once(ctx):
    first, audit = result(treasury.SPEC.handle(request("t-1", "100"), ctx))
    assert first.result == "SUCCEEDED" and audit == ["TRANSFER_SUCCEEDED"]
    again, _ = result(treasury.SPEC.handle(request("t-1", "100"), ctx))
    assert again == first
    rows = moved(ctx)
    assert len(rows) == 1 and Decimal(str(rows[0]["amount"])) == Decimal("100")
    doc = ctx.store.get("treasury_transfers", "t-1")
    assert doc["state"] == "SUCCEEDED" and doc["resolved_by"] == "reply" and doc["attempts"] == 1


def test_lost_reply_resolved_from_history_without_second_transfer(ctx, venue):
    venue.control("/chimera/v1/faults", {"lost_reply_share": 1.0})
    try:
        resp, _ = result(treasury.SPEC.handle(request("t-lost", "42.5"), ctx))
    finally:
        venue.control("/chimera/v1/faults", {"lost_reply_share": 0.0})
    assert resp.result == "SUCCEEDED"
    doc = ctx.store.get("treasury_transfers", "t-lost")
    assert doc["resolved_by"] == "history" and doc["last_error"]
    assert len(moved(ctx)) == 1
    result(treasury.SPEC.handle(request("t-lost", "42.5"), ctx))  # a redelivery after that: still one
    assert len(moved(ctx)) == 1


class NeverArrives:
    """The real wallet client, except that the first transfer request is lost before the venue."""

    def __init__(self, real):
        self.real, self.lost = real, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def user_universal_transfer(self, **kw):
        if self.lost == 0:
            self.lost += 1
            from binance_common.errors import NetworkError

            raise NetworkError("connection reset before the request was sent")
        return self.real.user_universal_transfer(**kw)


def test_unknown_outcome_not_in_history_is_retried_not_resent(ctx):
    ctx.venues = Venues(wallets={"main": NeverArrives(ctx.venues.wallet("main"))})
    with pytest.raises(RetryableError, match="not in the history"):
        treasury.SPEC.handle(request("t-net", "10"), ctx)
    assert ctx.store.get("treasury_transfers", "t-net")["state"] == "EXECUTING" and moved(ctx) == []
    with pytest.raises(RetryableError):  # redelivered within the grace: still only resolving
        treasury.SPEC.handle(request("t-net", "10"), ctx)
    ctx.clock.advance(61_000)  # past the grace and still absent: deemed never executed, sent again once
    resp, _ = result(treasury.SPEC.handle(request("t-net", "10"), ctx))
    assert resp.result == "SUCCEEDED" and len(moved(ctx)) == 1
    assert ctx.store.get("treasury_transfers", "t-net")["attempts"] == 2


def test_venue_down_before_sending_leaves_pending(ctx, venue):
    venue.control("/chimera/v1/faults", {"error_5xx_share": 1.0})
    try:
        with pytest.raises(RetryableError, match="history unavailable"):
            treasury.SPEC.handle(request("t-5xx", "10"), ctx)
    finally:
        venue.control("/chimera/v1/faults", {"error_5xx_share": 0.0})
    assert ctx.store.get("treasury_transfers", "t-5xx")["state"] == "PENDING"
    resp, _ = result(treasury.SPEC.handle(request("t-5xx", "10"), ctx))
    assert resp.result == "SUCCEEDED" and len(moved(ctx)) == 1


@pytest.mark.parametrize(("amount", "direction", "asset", "reason"), [
    ("501", "MAIN_UMFUTURE", "USDT", "exceeds the per-transfer limit 500 USDT"),
    ("10", "UMFUTURE_MAIN", "USDT", "direction UMFUTURE_MAIN is not whitelisted"),
    ("10", "MAIN_UMFUTURE", "BTC", "no transfer limit configured for BTC"),
])
def test_refused_with_clear_reason_and_nothing_moves(ctx, amount, direction, asset, reason):
    resp, audit = result(treasury.SPEC.handle(request("t-bad", amount, direction, asset), ctx))
    assert resp.result == "FAILED" and reason in resp.message and audit == ["TRANSFER_FAILED"]
    assert ctx.store.get("treasury_transfers", "t-bad")["state"] == "FAILED"
    assert moved(ctx) == []


def test_venue_refusal_is_failed(ctx):
    ctx.settings.extra["treasury"] = {"limits": {"USDT": "1e12"}, "directions": ["MAIN_UMFUTURE"]}
    resp, _ = result(treasury.SPEC.handle(request("t-big", "999999999"), ctx))
    assert resp.result == "FAILED" and "insufficient balance" in resp.message.lower()


def test_lock_scope_is_per_direction():
    assert treasury.SPEC.lock(request("x", "1")) == "lock:{treasury}:MAIN:UMFUTURE"
