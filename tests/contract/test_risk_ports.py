"""One contract for the risk port (``ctx.risk``) and S2's feature port (``ctx.features``): the
in-memory implementation, a single Redis and the 6-node cluster answer the same."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from chimera.ports.features import MemoryFeatureState, RedisFeatureState, StoredBar, record_bar
from chimera.risk.state import (
    BUDGET_EXHAUSTED,
    OK,
    Limits,
    MemoryState,
    RedisState,
    Usage,
    WrongSymbol,
)
from chimera.schemas.strategy import KillSwitchState, RegimeState
from chimera.streams import keys
from chimera.streams.redis import connect
from chimera.workers.clock import ManualClock
from tests.conftest import _flush as flush
from tests.support.polling import wait_until

T0 = 1_751_760_000_000


class Backend:
    """A port under test plus how time passes for it: the memory one follows a ManualClock, Redis
    expires keys on its own clock (polled with a deadline)."""

    def __init__(self, kind: str, r=None) -> None:
        self.kind, self.r = kind, r
        self.clock = ManualClock(T0)
        self.risk = RedisState(r) if r is not None else MemoryState(self.clock.now_ms)
        self.features = RedisFeatureState(r) if r is not None else MemoryFeatureState()

    def until_expired(self, ttl_ms: int, gone) -> None:
        if self.r is None:
            self.clock.advance(ttl_ms - 1)
            assert not gone(), "expired before its TTL"
            self.clock.advance(1)
            assert gone()
        else:
            wait_until(gone, timeout=5, message="the key's TTL")

    def record_bar(self, symbol: str, open_time: int, close: float) -> None:
        """A closed bar as it reaches the store: S1 writes Redis before publishing; S2 reports it."""
        if self.r is not None:
            c = str(close)
            record_bar(self.r, symbol, StoredBar(open_time, c, c, c, c, "1"))
        self.features.bar_closed(symbol, open_time, close)


@pytest.fixture(params=["memory", "single", "cluster"])
def port(request):
    if request.param == "memory":
        yield Backend("memory")
        return
    server = request.getfixturevalue("redis_server" if request.param == "single" else "redis_cluster")
    r = connect(server.url)
    flush(r)
    yield Backend(request.param, r)
    r.close()


LIMITS = Limits(Decimal("100"), 2, 3)


# --- kill switch, health, regime ----------------------------------------------------------------


def test_kill_switch_set_read_clear_and_expire(port):
    risk = port.risk
    assert risk.kill_switch() is None and risk.clear_kill_switch() is False
    ks = KillSwitchState(mode="REDUCE_ONLY", set_by="ops", reason="drill", set_at=T0)
    risk.set_kill_switch(ks, 60_000)
    assert risk.kill_switch() == ks
    assert risk.clear_kill_switch() is True and risk.kill_switch() is None
    assert risk.clear_kill_switch() is False
    risk.set_kill_switch(ks, 200)
    port.until_expired(200, lambda: risk.kill_switch() is None)
    assert risk.clear_kill_switch() is False  # an expired switch is not "cleared"


def test_health_is_a_level_with_a_ttl(port):
    risk = port.risk
    assert risk.health() is None
    risk.set_health("yellow", 60_000)
    assert risk.health() == "YELLOW"
    risk.set_health("RED", 200)
    assert risk.health() == "RED"
    port.until_expired(200, lambda: risk.health() is None)


def test_regime_write_gets_the_next_rev_and_reads_back_whole(port):
    risk = port.risk
    assert risk.regime() is None and risk.regime_state() is None
    state = RegimeState(regime="EXTREME", pct=0.9333333333333333, rv=1.2345678901234567, symbol="BTCUSDT",
                        as_of=T0, expires_at=T0 + 26 * 3_600_000, history_days=30, reason="rv_high_percentile",
                        computed_at=T0 + 1500)
    first = risk.set_regime(state, 60_000)
    assert first.rev == 1 and first == RegimeState(**{**_fields(state), "rev": 1})
    assert risk.regime() == "EXTREME" and risk.regime_state() == first
    second = risk.set_regime(RegimeState(regime="FROZEN", symbol="BTCUSDT", as_of=T0 + 86_400_000), 200)
    assert second.rev == 2 and risk.regime() == "FROZEN" and risk.regime_state() == second
    assert risk.regime_state().pct is None  # nothing of the previous state leaks into the new one
    port.until_expired(200, lambda: risk.regime() is None)
    assert risk.set_regime(state, 60_000).rev == 3  # the rev outlives an expired state


def _fields(s: RegimeState) -> dict:
    return {f: getattr(s, f) for f in s.__struct_fields__}


# --- budget and concurrency reservation ----------------------------------------------------------


def test_reserve_checks_open_positions_then_symbol_then_budget_and_is_idempotent(port):
    risk = port.risk
    assert risk.reserve("p1", "BTCUSDT", Decimal("40"), LIMITS) == OK
    assert risk.reserve("p1", "BTCUSDT", Decimal("40"), LIMITS) == OK  # redelivered: booked once
    assert risk.usage("BTCUSDT") == Usage(Decimal("40"), 1, 1)
    assert risk.reserve("p2", "BTCUSDT", Decimal("61"), LIMITS) == "RISK_BUDGET"
    assert risk.reserve("p2", "BTCUSDT", Decimal("60"), LIMITS) == OK  # exactly the budget
    assert risk.reserve("p3", "BTCUSDT", Decimal("0"), LIMITS) == "CONCURRENCY"  # 2 per symbol
    assert risk.reserve("p3", "ETHUSDT", Decimal("0.000001"), LIMITS) == "RISK_BUDGET"
    assert risk.reserve("p3", "ETHUSDT", Decimal("0"), LIMITS) == OK
    assert risk.reserve("p4", "SOLUSDT", Decimal("0"), LIMITS) == "MAX_OPEN_POSITIONS"  # 3 open
    assert risk.usage("ETHUSDT") == Usage(Decimal("100"), 3, 1)
    assert risk.release("p2", "BTCUSDT") and not risk.release("p2", "BTCUSDT")
    assert risk.usage("BTCUSDT") == Usage(Decimal("40"), 2, 1)
    with pytest.raises(WrongSymbol):
        risk.release("p1", "ETHUSDT")
    assert risk.usage("BTCUSDT") == Usage(Decimal("40"), 2, 1)  # the refused release freed nothing
    assert not risk.release("never", "BTCUSDT")


def test_micro_usdt_precision(port):
    risk = port.risk
    assert risk.reserve("p", "BTCUSDT", Decimal("12.3456789"), LIMITS) == OK  # booked to the micro-USDT
    assert risk.usage("BTCUSDT").in_use_usdt == Decimal("12.345679")
    assert risk.release("p", "BTCUSDT") and risk.usage("BTCUSDT").in_use_usdt == 0


def test_adds_grow_a_reservation_once_each_within_the_budget_and_release_frees_all(port):
    risk = port.risk
    assert risk.reserve("p1", "BTCUSDT", Decimal("14"), Limits(Decimal("20"), 1, 5)) == OK
    assert risk.increase("p1", "BTCUSDT", "p1:add1", Decimal("3"), Decimal("20")) == OK
    assert risk.increase("p1", "BTCUSDT", "p1:add1", Decimal("3"), Decimal("20")) == OK  # redelivered
    assert risk.increase("p1", "BTCUSDT", "p1:add2", Decimal("3.000001"), Decimal("20")) == BUDGET_EXHAUSTED
    assert risk.usage("BTCUSDT") == Usage(Decimal("17"), 1, 1)
    assert risk.increase("p1", "BTCUSDT", "p1:add2", Decimal("3"), Decimal("20")) == OK
    assert risk.usage("BTCUSDT") == Usage(Decimal("20"), 1, 1)  # adds take no position slot
    with pytest.raises(WrongSymbol):
        risk.increase("p1", "ETHUSDT", "p1:add3", Decimal("1"), Decimal("100"))
    with pytest.raises(ValueError, match="without ','"):
        risk.increase("p1", "BTCUSDT", "a,b", Decimal("1"), Decimal("100"))
    assert risk.release("p1", "BTCUSDT") and risk.usage("BTCUSDT") == Usage(Decimal("0"), 0, 0)
    # An add on a position S3 never reserved (adopted): bounded by the budget, no slot, released.
    assert risk.increase("ad", "ETHUSDT", "ad:add1", Decimal("5"), Decimal("4")) == BUDGET_EXHAUSTED
    assert risk.increase("ad", "ETHUSDT", "ad:add1", Decimal("5"), Decimal("20")) == OK
    assert risk.usage("ETHUSDT") == Usage(Decimal("5"), 0, 0)
    assert risk.reserve("ad2", "ETHUSDT", Decimal("1"), Limits(Decimal("20"), 1, 1)) == OK  # the slot is free
    assert risk.release("ad", "ETHUSDT") and risk.release("ad2", "ETHUSDT")
    assert risk.usage("ETHUSDT") == Usage(Decimal("0"), 0, 0)
    if port.r is not None:  # nothing left behind in Redis
        r = port.r
        assert int(r.get(keys.RISK_BUDGET_INUSE)) == 0 and int(r.get(keys.RISK_OPEN_POSITIONS)) == 0
        assert r.hlen(keys.RISK_RESERVATIONS) == 0 and int(r.get(keys.risk_concurrency("BTCUSDT"))) == 0


def test_reserve_is_atomic_under_contention(port):
    risk = port.risk
    barrier = threading.Barrier(24)

    def go(i):
        barrier.wait()
        return risk.reserve(f"p{i}", "BTCUSDT", Decimal("30"), Limits(Decimal("100"), 10, 10))

    with ThreadPoolExecutor(24) as pool:
        got = list(pool.map(go, range(24)))
    assert got.count(OK) == 3 and set(got) == {OK, "RISK_BUDGET"}
    assert risk.usage("BTCUSDT") == Usage(Decimal("90"), 3, 3)


# --- per account (ARCHITECTURE §11) -------------------------------------------------------------


def test_account_kill_switch_binds_only_its_account_and_the_global_one_binds_all(port):
    risk = port.risk
    halt = KillSwitchState(mode="HALT_NEW", set_by="ops", reason="sub1 only", set_at=T0)
    risk.set_kill_switch(halt, 60_000, account_id="sub1")
    assert risk.kill_switch(account_id="sub1") == halt and risk.effective_kill_switch("sub1") == halt
    assert risk.kill_switch() is None and risk.kill_switch(account_id="main") is None
    assert risk.effective_kill_switch("main") is None and risk.effective_kill_switch() is None
    flat = KillSwitchState(mode="FLATTEN", set_by="ops", reason="everything", set_at=T0 + 1)
    risk.set_kill_switch(flat, 60_000)  # global
    assert risk.effective_kill_switch("main") == flat and risk.effective_kill_switch("sub2") == flat
    assert risk.effective_kill_switch("sub1") == flat  # the stricter of the two
    assert risk.clear_kill_switch() is True
    assert risk.effective_kill_switch("sub1") == halt and risk.effective_kill_switch("main") is None
    # A stricter account switch wins over a milder global one.
    risk.set_kill_switch(KillSwitchState(mode="HALT_NEW", set_by="ops"), 60_000)
    reduce = KillSwitchState(mode="REDUCE_ONLY", set_by="s5-reconciler", set_at=T0 + 2)
    risk.set_kill_switch(reduce, 60_000, account_id="sub1")
    assert risk.effective_kill_switch("sub1") == reduce
    assert risk.clear_kill_switch(account_id="sub1") is True and risk.clear_kill_switch(account_id="sub1") is False
    assert risk.effective_kill_switch("sub1").mode == "HALT_NEW"  # the global one is still up
    risk.set_kill_switch(halt, 200, account_id="sub1")
    assert risk.clear_kill_switch() is True
    port.until_expired(200, lambda: risk.effective_kill_switch("sub1") is None)
    if port.r is not None:  # the account switch sits in the global switch's slot (one MGET reads both)
        assert port.r.get(keys.kill_switch_account("main")) is None
        assert keys.kill_switch_account("sub1") != keys.KILL_SWITCH


def test_budgets_and_concurrency_are_per_account(port):
    risk = port.risk
    lim = Limits(Decimal("100"), 1, 2)
    assert risk.reserve("m1", "BTCUSDT", Decimal("100"), lim) == OK  # main (the default) is full...
    assert risk.reserve("m2", "ETHUSDT", Decimal("1"), lim) == "RISK_BUDGET"
    assert risk.reserve("m2", "BTCUSDT", Decimal("0"), lim) == "CONCURRENCY"
    assert risk.reserve("s1", "BTCUSDT", Decimal("100"), lim, account_id="sub1") == OK  # ...sub1 is not
    assert risk.reserve("s1", "BTCUSDT", Decimal("100"), lim, account_id="sub1") == OK  # redelivered
    assert risk.reserve("s2", "ETHUSDT", Decimal("0"), lim, account_id="sub1") == OK
    assert risk.reserve("s3", "SOLUSDT", Decimal("0"), lim, account_id="sub1") == "MAX_OPEN_POSITIONS"
    assert risk.usage("BTCUSDT") == risk.usage("BTCUSDT", account_id="main") == Usage(Decimal("100"), 1, 1)
    assert risk.usage("BTCUSDT", account_id="sub1") == Usage(Decimal("100"), 2, 1)
    assert risk.usage("BTCUSDT", account_id="sub2") == Usage(Decimal("0"), 0, 0)
    assert (risk.open_count(), risk.open_count("main"), risk.open_count("sub1"), risk.open_count("sub2")) == (1, 1, 2, 0)
    # An add books on its own account's budget only.
    assert risk.increase("m1", "BTCUSDT", "m1:add1", Decimal("1"), Decimal("100")) == BUDGET_EXHAUSTED
    assert risk.increase("s2", "ETHUSDT", "s2:add1", Decimal("1"), Decimal("200"), account_id="sub1") == OK
    assert risk.usage("ETHUSDT", account_id="sub1") == Usage(Decimal("101"), 2, 1)
    # A release names the account that holds the reservation: the other account's is untouched.
    assert not risk.release("s1", "BTCUSDT") and risk.usage("BTCUSDT", account_id="sub1").open_positions == 2
    assert risk.release("s1", "BTCUSDT", account_id="sub1")
    assert risk.usage("BTCUSDT", account_id="sub1") == Usage(Decimal("1"), 1, 0)
    assert risk.usage("BTCUSDT") == Usage(Decimal("100"), 1, 1)
    assert risk.release("s2", "ETHUSDT", account_id="sub1") and risk.release("m1", "BTCUSDT")
    assert risk.open_count("sub1") == risk.open_count() == 0
    if port.r is not None:  # each account's budget keys share one slot of their own
        from redis.cluster import key_slot

        sub = [keys.risk_budget_inuse("sub1"), keys.risk_reservations("sub1"), keys.risk_open_positions("sub1"),
               keys.risk_concurrency("BTCUSDT", "sub1")]
        assert len({key_slot(k.encode()) for k in sub}) == 1
        assert keys.risk_budget_inuse("main") == keys.RISK_BUDGET_INUSE
        assert int(port.r.get(keys.risk_budget_inuse("sub1"))) == 0 and port.r.hlen(keys.risk_reservations("sub1")) == 0


# --- S2's feature port --------------------------------------------------------------------------


def test_engine_cache_load_answers_the_blob_only_when_the_seq_moved(port):
    f = port.features
    assert f.load("ETHUSDT", -1) == (0, None)
    assert f.save({}) == {}
    assert f.save({"ETHUSDT": b"state-1", "BTCUSDT": b"btc-1"}) == {"ETHUSDT": 1, "BTCUSDT": 1}
    assert f.load("ETHUSDT", -1) == (1, b"state-1")
    assert f.load("ETHUSDT", 1) == (1, None)  # the caller's engine is current: no blob
    assert f.save({"ETHUSDT": b"state-2"}) == {"ETHUSDT": 2}
    assert f.load("ETHUSDT", 1) == (2, b"state-2")  # another owner wrote since
    assert f.load("BTCUSDT", 0) == (1, b"btc-1")
    assert f.load("SOLUSDT", 0) == (0, None)


def test_bar_store_answers_closes_in_the_half_open_range(port):
    f = port.features
    m = 60_000
    for i in range(10):
        port.record_bar("BTCUSDT", i * m, 100.0 + i)
    assert f.closes("BTCUSDT", None, 2 * m) == [(0, 100.0), (m, 101.0), (2 * m, 102.0)]
    assert f.closes("BTCUSDT", 2 * m, 4 * m) == [(3 * m, 103.0), (4 * m, 104.0)]
    assert f.closes("BTCUSDT", 9 * m, 20 * m) == []
    port.record_bar("BTCUSDT", 10 * m, 110.0)  # past what was read: read again
    assert f.closes("BTCUSDT", 9 * m, 20 * m) == [(10 * m, 110.0)]
    assert f.closes("BTCUSDT", 0, 2 * m) == [(m, 101.0), (2 * m, 102.0)]  # before what was last asked
    assert f.closes("ETHUSDT", None, 20 * m) == []
