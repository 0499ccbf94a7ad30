"""S5's spot pass on real Redis (standalone + cluster), the SQLite store and the local venue driven through
the official Binance spot SDK (real 2024-08-08 BTCUSDT spot recording, paused; the market moves only
through the venue's injection API). Assertions read the venue: its open orders, order lists, trades and
balances."""

from __future__ import annotations

from decimal import Decimal

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.reconciler.role import SPEC as S5
from chimera.handlers.router.role import SPEC as S4
from chimera.schemas.envelope import decode
from chimera.schemas.messages import Reconcile
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import SpotTrading, client_order_id
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.handler import HandlerSpec
from tests.integration.test_router_b1 import env  # noqa: F401 - fixture
from tests.integration.test_router_b2 import market_at, protected_entry, spot, spot_sdk, submit, venue  # noqa: F401
from tests.integration.test_spot_positions import spot_user_data, trade_math, venue_trades
from tests.support.polling import wait_until
from tests.support.positions import position
from tests.support.workers import ThreadWorker

S5_ON_DEMAND = HandlerSpec(role=S5.role, streams=S5.streams, routes=S5.routes)  # no start-up run, no timer
D = Decimal


def reconcile(r, store, run_id: str, scope: str = "ALL") -> dict:
    Producer(r, WallClock()).publish(keys.RECON_COMMANDS, Reconcile(scope=scope, requested_by="test"),
                                     idempotency_key=run_id)
    return wait_until(lambda: store.get("strategy_events", f"RECONCILE_RUN:{run_id}"), timeout=30,
                      message=f"reconcile run {run_id}")


def alerts(r) -> list:
    return [decode(f).payload for _, f in r.xrange(keys.ALERTS)]


def balance(v, asset: str) -> Decimal:
    rows = spot_sdk(v).get_account().data().to_dict()["balances"]
    b = next((b for b in rows if b["asset"] == asset), None)
    return D(b["free"]) + D(b["locked"]) if b else D(0)


def foreign_oco(v, prefix: str) -> tuple[str, str, str]:
    """An OCO sell placed by hand (not by Chimera) through the SDK: list id and leg client ids."""
    mid = spot(v).book("BTCUSDT").mid
    ids = (f"{prefix}-list", f"{prefix}-tp", f"{prefix}-sl")
    spot(v).oco(symbol="BTCUSDT", side="SELL", qty=D("0.00100"), tp_price=(mid * D("1.05")).quantize(D("0.01")),
                sl_stop=(mid * D("0.95")).quantize(D("0.01")), sl_limit=(mid * D("0.949")).quantize(D("0.01")),
                list_client_id=ids[0], tp_client_id=ids[1], sl_client_id=ids[2])
    return ids


def resting_buy(v, cid: str) -> None:
    mid = spot(v).book("BTCUSDT").mid
    spot(v).new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", qty=D("0.00100"),
                      price=(mid * D("0.9")).quantize(D("0.01")), tif="GTC", client_id=cid)


def test_unknown_spot_orders_and_oco_lists_are_cancelled_or_adopted(r, env, venue):  # noqa: F811
    s, store = env
    lst, tp_id, sl_id = foreign_oco(venue, "hand")
    resting_buy(venue, "hand-buy")
    ours = client_order_id("lost-intent", "mk")  # a Chimera order whose documents were lost
    resting_buy(venue, ours)
    assert len(spot_sdk(venue).open_order_list().data()) == 1
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store), ThreadWorker(S4, r, s, "s4-a", store):
        rep = reconcile(r, store, "run-unk")
        wait_until(lambda: {o.client_order_id for o in spot(venue).open_orders("BTCUSDT")} == {ours}, timeout=30,
                   message="foreign orders cancelled at the venue by S4")
    # The venue: the whole OCO list ended, both legs cancelled; the foreign buy cancelled; ours still open.
    got = spot_sdk(venue).get_order_list(orig_client_order_id=lst).data().to_dict()
    assert got["listOrderStatus"] == "ALL_DONE" and spot_sdk(venue).open_order_list().data() == []
    assert {spot(venue).query("BTCUSDT", c).status for c in (tp_id, sl_id, "hand-buy")} == {"CANCELED"}
    # The report: the list as one finding (both legs), the single buy, ours adopted.
    closed = {c["ref"]: c for c in rep["closed"]}
    assert set(closed) == {lst, "hand-buy"} and {c["action"] for c in closed.values()} == {"CANCEL_FOREIGN"}
    assert sorted(closed[lst]["orders"]) == sorted([tp_id, sl_id]) and closed[lst]["list"] is True
    [adopted] = rep["adopted"]
    assert adopted["ref"] == ours and adopted["type"] == "spot_order"
    leg = store.query("orders", {"client_order_id": ours})[0]
    assert leg["status"] == "ACCEPTED" and leg["market"] == "SPOT" and leg["account_id"] == "main"
    assert rep["summary"]["spot_orders_venue"] == 4 and rep["summary"]["spot_orders_store"] == 0
    assert rep["consistency"]["spot_orders"] == 0.0 and not rep["consistent"]
    assert {(a.code, a.context["ref"]) for a in alerts(r) if a.code == "RECONCILE_UNKNOWN_ORDER"} == \
        {("RECONCILE_UNKNOWN_ORDER", lst), ("RECONCILE_UNKNOWN_ORDER", "hand-buy")}
    assert all(a.context["account_id"] == "main" for a in alerts(r) if a.code == "RECONCILE_UNKNOWN_ORDER")
    # Next run: S4's cancels are in the store, ours is known: the orders agree both ways.
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        again = reconcile(r, store, "run-unk-2")
    assert again["consistency"]["spot_orders"] == 1.0 and not again["closed"] and not again["adopted"]


def test_alert_only_policy_leaves_an_unknown_oco_open(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "spot-alert-only", 1, {"reconciler": {"spot_unknown_order_policy": "alert_only"}})
    lst, tp_id, sl_id = foreign_oco(venue, "keep")
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store), ThreadWorker(S4, r, s, "s4-a", store):
        rep = reconcile(r, store, "run-keep")
    assert {o.client_order_id for o in spot(venue).open_orders("BTCUSDT")} == {tp_id, sl_id}
    [u] = [u for u in rep["unresolved"] if u["type"] == "spot_order"]
    assert u["ref"] == lst and u["policy"] == "alert_only" and not rep["closed"]
    assert [a.code for a in alerts(r)].count("RECONCILE_UNKNOWN_ORDER") == 1


def test_spot_oco_filled_while_workers_were_down_is_booked_by_s5(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "spot-settle", 1, {"reconciler": {"settle_ms": 200}})  # legs settle fast in this test
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        assert reconcile(r, store, "run-down-0")["consistent"]  # records the holdings outside Chimera
    intent, tp, sl = protected_entry(venue, "down-1")
    with spot_user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), \
            ThreadWorker(S6, r, s, "s6-a", store):
        submit(r, intent)
        wait_until(lambda: (p := position(store, "down-1")) and p.protection == "OCO", timeout=30,
                   message="spot position ACTIVE with its OCO")
    # Every worker and the user-data stream are down: the take-profit fills, nobody hears it.
    otp, osl = client_order_id("down-1", "otp"), client_order_id("down-1", "osl")
    market_at(venue, "trade", tp + D("1"))
    wait_until(lambda: spot(venue).query("BTCUSDT", otp).status == "FILLED", timeout=10, message="TP filled")
    # Older than settle_ms: the legs are settled, not in flight.
    wait_until(lambda: max(int(store.get("orders", f"down-1:{leg}")["updated_at"]) for leg in ("otp", "osl"))
               < WallClock().now_ms() - 400, timeout=10, message="legs settled")
    assert position(store, "down-1").state == "ACTIVE" and store.get("orders", "down-1:otp")["status"] == "ACCEPTED"
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-down")
    sells = venue_trades(venue, otp)
    held, pnl, fees = trade_math(venue_trades(venue, client_order_id("down-1", "e")), sells)
    # The legs take the venue's states; the fill is booked from the venue's trade history.
    otp_doc, osl_doc = store.get("orders", "down-1:otp"), store.get("orders", "down-1:osl")
    assert otp_doc["status"] == "FILLED" and D(otp_doc["filled_qty"]) == held
    assert osl_doc["status"] == "EXPIRED"
    fills = store.query("fills", {"client_order_id": otp})
    assert sorted(int(f["trade_id"]) for f in fills) == sorted(t["id"] for t in sells)
    assert sum((D(f["qty"]) for f in fills), D(0)) == held
    # The position: closed by the take-profit, with the venue's money.
    pos = position(store, "down-1")
    assert pos.state == "CLOSED" and pos.close_reason == "TAKE_PROFIT" and pos.closed_by == "reconciler"
    assert pos.realized_pnl == pnl and pos.fees == fees
    assert {c["ref"]: c["action"] for c in rep["closed"]}["down-1"] == "CLOSED_BY_FILL"
    assert {f["ref"] for f in rep["fixed"]} >= {otp, osl}
    # A second run, once the close has settled: nothing left to do, and the BTC balance is explained
    # again (back to the baseline).
    wait_until(lambda: int(store.get("positions", "down-1")["updated_at"]) < WallClock().now_ms() - 400,
               timeout=10, message="close settled")
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        again = reconcile(r, store, "run-down-2")
    assert not again["closed"] and not again["fixed"] and again["consistency"]["spot_orders"] == 1.0
    rows = {x["asset"]: x for x in store.get("strategy_events", "RECONCILE_SPOT_BALANCES:run-down-2")["rows"]}
    assert rows["BTC"]["status"] == "OK" and D(rows["BTC"]["venue_total"]) == balance(venue, "BTC") == D("1")
    assert D(rows["BTC"]["outside"]) == D("1") and D(rows["BTC"]["positions"]) == 0


def test_spot_balances_reconcile_store_vs_venue_with_a_clear_report(r, env, venue):  # noqa: F811
    s, store = env
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        first = reconcile(r, store, "run-bal-1")
        # The first run records what the account holds outside Chimera: nothing to explain yet.
        base = store.get("spot_baselines", "main")
        assert {a: D(v) for a, v in base["assets"].items()} == {"BTC": balance(venue, "BTC"),
                                                                "ETH": balance(venue, "ETH")}
        assert first["consistent"] and first["consistency"]["spot_balances"] == 1.0
        rows = store.get("strategy_events", "RECONCILE_SPOT_BALANCES:run-bal-1")["rows"]
        assert {x["asset"]: x["status"] for x in rows} == {"BTC": "OK", "ETH": "OK"}
        # Someone buys BTC by hand, and the store claims a spot ETH position the venue does not hold.
        before = balance(venue, "BTC")
        spot(venue).new_order(symbol="BTCUSDT", side="BUY", type="MARKET", qty=D("0.00200"), client_id="hand-mkt")
        bought = balance(venue, "BTC") - before
        assert bought == D("0.001998")  # 0.002 less the 0.1% taker fee paid in BTC
        store.upsert("positions", "ghost-eth", {"symbol": "ETHUSDT", "side": "BUY", "market": "SPOT",
                                                "qty": "0.5", "base_qty": "0.5", "state": "ACTIVE", "version": 1,
                                                "account_id": "main", "updated_at": 0})
        rep = reconcile(r, store, "run-bal-2")
    diffs = {u["ref"]: u for u in rep["unresolved"] if u["type"] == "balance"}
    assert set(diffs) == {"BTC", "ETH"}
    assert D(diffs["BTC"]["diff"]) == bought and diffs["BTC"]["why"] == "unexplained holding"
    assert D(diffs["ETH"]["diff"]) == D("-0.5") and diffs["ETH"]["why"] == "shortfall"
    assert D(diffs["BTC"]["venue"]) == balance(venue, "BTC")
    table = {x["asset"]: x for x in store.get("strategy_events", "RECONCILE_SPOT_BALANCES:run-bal-2")["rows"]}
    assert table["BTC"]["status"] == "DIFF" and D(table["BTC"]["outside"]) == before
    assert table["ETH"]["status"] == "DIFF" and D(table["ETH"]["positions"]) == D("0.5")
    assert not rep["consistent"] and rep["consistency"]["spot_balances"] == 0.0
    codes = [(a.code, a.context.get("asset")) for a in alerts(r) if a.code == "RECONCILE_SPOT_BALANCE"]
    assert sorted(codes) == [("RECONCILE_SPOT_BALANCE", "BTC"), ("RECONCILE_SPOT_BALANCE", "ETH")]
    assert all(a.level == "ERROR" and a.context["account_id"] == "main" for a in alerts(r)
               if a.code == "RECONCILE_SPOT_BALANCE")


def test_spot_entry_s6_never_booked_is_opened_by_s5(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "spot-settle", 1, {"reconciler": {"settle_ms": 200}})
    intent, tp, sl = protected_entry(venue, "orph-1")
    with ThreadWorker(S4, r, s, "s4-a", store):  # S6 is down: nobody books the entry
        submit(r, intent)
        wait_until(lambda: (d := store.get("order_intents", "orph-1")) and d["phase"] == "DONE", timeout=30,
                   message="entry filled and its OCO placed by S4")
    assert position(store, "orph-1") is None
    wait_until(lambda: int(store.get("orders", "orph-1:osl")["updated_at"]) < WallClock().now_ms() - 400,
               timeout=10, message="legs settled")
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store):
        rep = reconcile(r, store, "run-orph")
    pos = position(store, "orph-1")
    held, _, fees = trade_math(venue_trades(venue, client_order_id("orph-1", "e")), [])
    assert pos.state == "ACTIVE" and pos.market == "SPOT" and pos.qty == held and pos.fees == fees
    assert pos.protection == "OCO" and set(pos.protection_orders) == {client_order_id("orph-1", "otp"),
                                                                       client_order_id("orph-1", "osl")}
    [adopted] = [a for a in rep["adopted"] if a["type"] == "spot_position"]
    assert adopted["ref"] == "orph-1" and adopted["now"] == "ACTIVE"
    assert store.get("strategy_events", "RECONCILE_ADOPTED:run-orph:orph-1")


def test_reconciling_sub1_never_touches_main_spot_orders(r, env, venue):  # noqa: F811
    s, store = env
    lst, tp_id, sl_id = foreign_oco(venue, "main-hand")  # main's unknown OCO
    key, secret = venue.keys["sub1"]
    sub1 = SpotTrading(venue.base_url, key, secret)
    mid = sub1.book("BTCUSDT").mid
    sub1.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", qty=D("0.00100"),
                   price=(mid * D("0.9")).quantize(D("0.01")), tif="GTC", client_id="sub1-hand")
    with ThreadWorker(S5_ON_DEMAND, r, s, "s5-a", store), ThreadWorker(S4, r, s, "s4-a", store):
        Producer(r, WallClock()).publish(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by="test"),
                                         idempotency_key="run-sub1", account_id="sub1")
        rep = wait_until(lambda: store.get("strategy_events", "RECONCILE_RUN:run-sub1"), timeout=30,
                         message="sub1 reconcile run")
        wait_until(lambda: sub1.open_orders("BTCUSDT") == [], timeout=30, message="sub1's foreign order cancelled")
    # main's OCO is untouched at the venue; only sub1's own order was found and cancelled.
    assert {o.client_order_id for o in spot(venue).open_orders("BTCUSDT")} == {tp_id, sl_id}
    assert rep["summary"]["account_id"] == "sub1" and [c["ref"] for c in rep["closed"]] == ["sub1-hand"]
    assert sub1.query("BTCUSDT", "sub1-hand").status == "CANCELED"
    assert store.get("spot_baselines", "sub1")["account_id"] == "sub1" and store.get("spot_baselines", "main") is None
    assert {a.context["account_id"] for a in alerts(r) if a.code.startswith("RECONCILE_")} == {"sub1"}
    cmds = [decode(f) for _, f in r.xrange(keys.ORD_COMMANDS)]
    assert [(e.account_id, e.payload.intent_id) for e in cmds] == [("sub1", "recon:sub1:sub1-hand")]
