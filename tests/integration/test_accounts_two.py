"""Two accounts (main, sub1) on one local venue: nothing ever acts on an account its message does not name.

S4, S5 and S6 run as real consumer-group workers on Redis (single and the 6-node cluster); the venue is
the local Binance venue replaying the real 2023-04-04 BTCUSDT USDT-M recording, driven through the
official SDK clients with each account's own keys. Every assertion about who traded reads the venue's
own books (its engine's orders, each tagged with the account that placed it, and each account's
positionRisk / open orders through the SDK), not Chimera's records.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pytest

import chimera
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.reconciler.role import SPEC as S5
from chimera.handlers.router.role import SPEC as S4
from chimera.risk.state import RedisState
from chimera.schemas.envelope import decode
from chimera.schemas.messages import OrderIntent, Reconcile, SubmitOrder
from chimera.schemas.strategy import KillSwitchState, decode_kill_switch
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import FuturesTrading, client_order_id
from chimera.venues.local.server.app import default_keys
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.handler import HandlerSpec
from tests.support.futures_venue import btc_futures_venue
from tests.support.polling import wait_until
from tests.support.scheduler import scheduler_thread
from tests.support.workers import ThreadWorker

SYM = "BTCUSDT"
S5_ON_DEMAND = HandlerSpec(role=S5.role, streams=S5.streams, routes=S5.routes)  # no start-up run, no timer
DRILL_BUNDLE = Path(chimera.__file__).parent / "bundles" / "drill_high_limits.json"


@pytest.fixture
def venue(tmp_path):
    with btc_futures_venue(tmp_path, weight_per_minute=100_000) as v:  # polls read the venue's books
        yield v


@pytest.fixture
def env(r, settings, venue, tmp_path):
    """Settings on the venue with an accounts file: main and sub1 enabled, sub2 listed but disabled."""
    accounts = [{"account_id": name, "api_key": venue.keys[name][0], "api_secret": venue.keys[name][1]}
                for name in ("main", "sub1")]
    key, secret = default_keys("sub2")
    accounts.append({"account_id": "sub2", "api_key": key, "api_secret": secret, "enabled": False})
    (tmp_path / "accounts.json").write_text(json.dumps({"accounts": accounts}))
    s = dataclasses.replace(settings, venue="paper", venue_url=venue.base_url,
                            accounts_file=str(tmp_path / "accounts.json"))
    with scheduler_thread(r):
        yield s, open_store(s.store_url)


def client(venue, account: str) -> FuturesTrading:
    key, secret = venue.keys[account]
    return FuturesTrading(venue.base_url, key, secret)


def submit(r, intent: OrderIntent, account: str = "main") -> None:
    Producer(r, WallClock()).publish(keys.ORD_COMMANDS, SubmitOrder(intent=intent), idempotency_key=intent.intent_id,
                                     account_id=account)


def entry(intent_id: str, qty: str, sl: Decimal | None = None, account: str = "") -> OrderIntent:
    return OrderIntent(intent_id=intent_id, market="FUT", symbol=SYM, side="BUY", qty=Decimal(qty),
                       exec_policy="MARKET", purpose="ENTRY", sl_price=sl, account_id=account)


def venue_books(venue) -> dict[str, dict[str, str]]:
    """account -> {client order id: status} of every order the venue's engine holds (open or done)."""
    orders = venue.call(lambda: list(venue.server.engine.orders.values()))
    out: dict[str, dict[str, str]] = {}
    for o in orders:
        out.setdefault(o.account, {})[o.client_id] = o.status
    return out


def position_amt(venue, account: str) -> Decimal:
    return sum((Decimal(str(p.get("positionAmt") or 0)) for p in client(venue, account).position_risk(SYM)),
               Decimal(0))


def open_ids(venue, account: str) -> set[str]:
    c = client(venue, account)
    return {o.client_order_id for o in c.open_orders(SYM) + c.open_algo_orders(SYM)}


def done(store, intent_id: str):
    doc = store.get("order_intents", intent_id)
    return doc if doc and doc["phase"] == "DONE" else None


def armed(store, venue, pos_id: str, account: str):
    """The position is ACTIVE and its exchange-side stop is open at ``account``."""
    pos = store.get("positions", pos_id)
    want = client_order_id(f"{pos_id}:sl1", "sl")
    return pos and pos["state"] == "ACTIVE" and want in open_ids(venue, account) and pos


def stop_price(venue) -> Decimal:
    return (client(venue, "main").book(SYM).mid * Decimal("0.97")).quantize(Decimal("0.1"))


def test_two_accounts_trade_one_symbol_at_once_and_each_venue_account_holds_only_its_own(r, env, venue):
    s, store = env
    sl = stop_price(venue)
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S4, r, s, "s4-b", store), \
            ThreadWorker(S6, r, s, "s6-a", store):
        # Back to back, so the two S4 replicas work on both at the same time. main's intent leaves the
        # account to its envelope; sub1's names it in the intent and the envelope.
        submit(r, entry("two-main", "0.010", sl))
        submit(r, entry("two-sub1", "0.020", sl, account="sub1"), account="sub1")
        main_pos = wait_until(lambda: armed(store, venue, "two-main", "main"), timeout=30, interval=0.1,
                              message="main protected")
        sub_pos = wait_until(lambda: armed(store, venue, "two-sub1", "sub1"), timeout=30, interval=0.1, message="sub1 protected")
        wait_until(lambda: len(store.query("fills", {"intent_id": ("in", ["two-main", "two-sub1"])})) >= 2,
                   timeout=10, message="fills booked")
        # S6's scheduled pass (every 5 s) reads each position's row at the venue from its own account.
        managed = wait_until(lambda: all((store.get("positions", p) or {}).get("venue_amt") not in (None, "")
                                         for p in ("two-main", "two-sub1")) and
                             {p: Decimal(store.get("positions", p)["venue_amt"]) for p in ("two-main", "two-sub1")},
                             timeout=30, interval=0.2, message="a management pass of both positions")
    # The venue's own books: each account holds exactly its own entry and its own stop.
    books = venue_books(venue)
    mine = {"main": {client_order_id("two-main", "mkt"), client_order_id("two-main:sl1", "sl")},
            "sub1": {client_order_id("two-sub1", "mkt"), client_order_id("two-sub1:sl1", "sl")}}
    for account, ids in mine.items():
        assert ids <= set(books.get(account, {})), (account, books)
        other = mine["sub1" if account == "main" else "main"]
        assert not other & set(books.get(account, {})), f"{account} holds another account's order"
    assert position_amt(venue, "main") == Decimal("0.010") and position_amt(venue, "sub1") == Decimal("0.020")
    stops = {a: client(venue, a).open_algo_orders(SYM) for a in ("main", "sub1")}
    assert [(o.client_order_id, o.qty) for o in stops["main"]] == [(client_order_id("two-main:sl1", "sl"),
                                                                    Decimal("0.010"))]
    assert [(o.client_order_id, o.qty) for o in stops["sub1"]] == [(client_order_id("two-sub1:sl1", "sl"),
                                                                    Decimal("0.020"))]
    assert managed == {"two-main": Decimal("0.010"), "two-sub1": Decimal("0.020")}
    # Chimera's records carry the account all the way.
    assert (main_pos["account_id"], sub_pos["account_id"]) == ("main", "sub1")
    for iid, account in (("two-main", "main"), ("two-sub1", "sub1"), ("two-sub1:sl1", "sub1")):
        assert store.get("order_intents", iid)["account_id"] == account
        assert {leg["account_id"] for leg in store.query("orders", {"intent_id": iid})} == {account}
    assert {f["account_id"] for f in store.query("fills", {"intent_id": "two-sub1"})} == {"sub1"}
    results = [decode(f) for _, f in r.xrange(keys.ORD_RESULTS)]
    assert {e.account_id for e in results if e.payload.intent_id.startswith("two-sub1")} == {"sub1"}
    assert {e.account_id for e in results if e.payload.intent_id.startswith("two-main")} == {"main"}


def test_a_kill_switch_on_sub1_leaves_main_trading(r, env, venue):
    s, store = env
    risk = RedisState(r)
    risk.set_kill_switch(KillSwitchState(mode="HALT_NEW", set_by="test", reason="sub1 only"), 600_000,
                         account_id="sub1")
    with ThreadWorker(S4, r, s, "s4-a", store):
        submit(r, entry("ks-sub1", "0.020", account="sub1"), account="sub1")
        submit(r, entry("ks-main", "0.010"))
        sub = wait_until(lambda: done(store, "ks-sub1"), timeout=20, message="sub1 answered")
        main = wait_until(lambda: done(store, "ks-main"), timeout=20, message="main answered")
    assert sub["result"]["status"] == "REJECTED" and sub["result"]["reason"] == "KILL_SWITCH:HALT_NEW"
    assert main["result"]["status"] == "FILLED"
    books = venue_books(venue)
    assert client_order_id("ks-main", "mkt") in books["main"]
    assert not any(cid == client_order_id("ks-sub1", "mkt") for ids in books.values() for cid in ids)
    assert position_amt(venue, "main") == Decimal("0.010") and position_amt(venue, "sub1") == 0
    assert risk.kill_switch() is None and risk.effective_kill_switch("main") is None


def test_reconciling_sub1_never_touches_main(r, env, venue):
    s, store = env
    bundle = json.loads(DRILL_BUNDLE.read_text())
    bundle["reconciler"] = {**bundle["reconciler"], "interval_ms": 0, "settle_ms": 0}
    activate(store, bundle["bundle_id"], 1, bundle)
    main_fut, sub_fut = client(venue, "main"), client(venue, "sub1")
    far = (main_fut.book(SYM).mid * Decimal("0.8")).quantize(Decimal("0.1"))
    # main: a position of ours, protected by its stop, and a manual resting order nobody should touch.
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        submit(r, entry("rc-main", "0.010", stop_price(venue)))
        wait_until(lambda: armed(store, venue, "rc-main", "main"), timeout=30, interval=0.1, message="main protected")
    main_fut.new_order(symbol=SYM, side="BUY", type="LIMIT", qty=Decimal("0.010"), price=far, tif="GTC",
                       client_id="manual-main-1")
    # sub1: a position and a resting order Chimera knows nothing about (placed by hand).
    sub_fut.new_order(symbol=SYM, side="BUY", type="MARKET", qty=Decimal("0.005"), client_id="manual-sub1-pos")
    sub_fut.new_order(symbol=SYM, side="BUY", type="LIMIT", qty=Decimal("0.005"), price=far, tif="GTC",
                      client_id="manual-sub1-1")
    main_before = {"books": venue_books(venue)["main"], "open": open_ids(venue, "main"),
                   "amt": position_amt(venue, "main")}
    stop_leg_before = store.get("orders", "rc-main:sl1:sl")
    assert main_before["open"] == {"manual-main-1", client_order_id("rc-main:sl1", "sl")}

    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        Producer(r, WallClock()).publish(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by="test"),
                                         idempotency_key="recon-sub1", account_id="sub1")
        first = wait_until(lambda: store.get("strategy_events", "RECONCILE_RUN:recon-sub1"), timeout=30,
                           message="sub1 reconcile run")
        # sub1's unknown order is cancelled at sub1; its position waits while an order rests on the symbol.
        wait_until(lambda: not open_ids(venue, "sub1"), timeout=30, interval=0.1, message="sub1's order cancelled")
        Producer(r, WallClock()).publish(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by="test"),
                                         idempotency_key="recon-sub1-2", account_id="sub1")
        second = wait_until(lambda: store.get("strategy_events", "RECONCILE_RUN:recon-sub1-2"), timeout=30,
                            message="second sub1 reconcile run")
        wait_until(lambda: position_amt(venue, "sub1") == 0, timeout=30, interval=0.1,
                   message="sub1's unknown position flattened at sub1")
    assert first["summary"]["account_id"] == second["summary"]["account_id"] == "sub1"
    assert not first["consistent"] and not second["consistent"]
    assert [c.get("action") for c in first["closed"]] == ["CANCEL_FOREIGN"]
    assert [c.get("action") for c in second["closed"]] == ["CLOSE_UNKNOWN"]
    # main at the venue: not one order more, none cancelled, the same position and open orders.
    books = venue_books(venue)
    assert books["main"] == main_before["books"]
    assert open_ids(venue, "main") == main_before["open"] and position_amt(venue, "main") == main_before["amt"]
    # main in the store: its live stop leg and its position untouched by sub1's run.
    assert store.get("orders", "rc-main:sl1:sl")["status"] == stop_leg_before["status"] == "ACCEPTED"
    assert store.get("positions", "rc-main")["state"] == "ACTIVE"
    # Every order the run sent went to sub1 (its intents and envelopes say so).
    sent = [decode(f) for _, f in r.xrange(keys.ORD_COMMANDS)]
    recon = [e for e in sent if e.idempotency_key.startswith(("recon:", "recon-close-"))]
    assert recon and {e.account_id for e in recon} == {"sub1"}
    # The inconsistency degrades sub1 only.
    ks = decode_kill_switch(r.get(keys.kill_switch_account("sub1")))
    assert (ks.mode, ks.set_by) == ("REDUCE_ONLY", "s5-reconciler")
    assert r.get(keys.KILL_SWITCH) is None and r.get(keys.kill_switch_account("main")) is None


def test_an_unknown_or_disabled_account_is_dead_lettered_with_the_reason_and_nothing_reaches_the_venue(
        r, env, venue):
    s, store = env
    before = venue_books(venue)
    with ThreadWorker(S4, r, s, "s4-a", store):
        submit(r, entry("acct-ghost", "0.010"), account="ghost")
        submit(r, entry("acct-sub2", "0.010", account="sub2"))  # named in the intent, envelope main
        submit(r, entry("acct-mixed", "0.010", account="sub1"), account="ghost")  # the two disagree
        submit(r, entry("acct-main", "0.010"))  # after the bad ones: the worker is alive and trades main
        wait_until(lambda: done(store, "acct-main"), timeout=20, message="main still trades")
        letters = wait_until(lambda: len(dead := [decode(f).payload for _, f in r.xrange(keys.DEAD_LETTER)]) >= 3
                             and dead, timeout=10, message="three dead letters")
    by_intent = {decode(dl.fields).payload.intent.intent_id: dl.reason for dl in letters}
    assert set(by_intent) == {"acct-ghost", "acct-sub2", "acct-mixed"}
    assert "'ghost' is not in the accounts file" in by_intent["acct-ghost"]
    assert "'sub2' is disabled" in by_intent["acct-sub2"]
    assert "account mismatch" in by_intent["acct-mixed"]
    assert all(dl.attempts <= 1 for dl in letters)  # permanent: not retried
    assert done(store, "acct-main")["result"]["status"] == "FILLED"
    for iid in ("acct-ghost", "acct-sub2", "acct-mixed"):
        assert store.get("order_intents", iid) is None  # refused before anything was stored
    after = venue_books(venue)
    new = {a: set(ids) - set(before.get(a, {})) for a, ids in after.items()}
    assert {a: ids for a, ids in new.items() if ids} == {"main": {client_order_id("acct-main", "mkt")}}
    assert position_amt(venue, "sub1") == 0
