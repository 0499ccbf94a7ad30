"""Virtual positions on the local venue (real Redis single + cluster, the official Binance SDK clients).

Two strategies (bundles ``alpha`` and ``beta``) trade BTCUSDT on the one ``main`` account through S4;
S1's user-data stream carries every trade to the ``vpos`` role. Expected values come from the venue:
its position (``positionRisk``) and its own trades of each order (``userTrades``); the plan's nets are
written out by hand."""

from __future__ import annotations

import socket
from decimal import Decimal
from types import MappingProxyType

import pytest

from chimera.accounts import role, views
from chimera.accounts import virtual as vp
from chimera.accounts.role import SPEC as VPOS
from chimera.errors import RetryableError
from chimera.handlers.reconciler.role import SPEC as S5
from chimera.handlers.router.role import SPEC as S4
from chimera.ports.venues import Venues
from chimera.schemas.envelope import Envelope, decode
from chimera.schemas.messages import OrderIntent, Reconcile
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import FuturesTrading, SpotTrading, Venue, client_order_id
from chimera.workers.clock import ManualClock, WallClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context, HandlerSpec
from tests.integration.test_router_b1 import done, env, fut, submit, venue  # noqa: F401 - fixtures
from tests.support.polling import wait_until
from tests.support.positions import user_data
from tests.support.workers import ThreadWorker

D = Decimal
SYM = "BTCUSDT"
# (intent, strategy, side, qty): alpha buys 0.010 and sells 0.003 (+0.007); beta sells 0.004, then buys
# 0.006, crossing zero (+0.002). Net +0.009.
PLAN = [("vp-a1", "alpha", "BUY", "0.010"), ("vp-b1", "beta", "SELL", "0.004"),
        ("vp-a2", "alpha", "SELL", "0.003"), ("vp-b2", "beta", "BUY", "0.006")]


def venue_amt(venue) -> Decimal:  # noqa: F811
    return sum((D(p["positionAmt"]) for p in fut(venue).position_risk(SYM) if p["positionSide"] == "BOTH"), D(0))


def venue_trades(venue, cid: str) -> list[dict]:  # noqa: F811
    order = fut(venue).query(SYM, cid)
    return sorted(fut(venue).trades(SYM, order.venue_order_id), key=lambda t: int(t["id"]))


def book(store) -> vp.VirtualBook | None:
    return vp.from_doc(store.get("virtual_books", f"main:FUT:{SYM}"))


def invariant_holds(store, venue) -> bool:  # noqa: F811
    return views.totals(store, "main").get(("main", SYM, "BOTH")) == venue_amt(venue)


def ops_events(r, kind: str) -> list:
    return [e.payload for e in (decode(f) for _, f in r.xrange(keys.OPS_EVENTS)) if e.payload.kind == kind]


def test_two_strategies_one_account_sum_to_the_venue_and_a_manual_order_is_unassigned(r, env, venue):  # noqa: F811
    s, store = env
    # two vpos replicas share the group: the per-book lock and the compare-and-set keep one booking per trade
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(VPOS, r, s, "vpos-a", store), \
            ThreadWorker(VPOS, r, s, "vpos-b"):
        with user_data(r, venue, s.store_url):
            trades: dict[str, list[dict]] = {}
            for iid, strategy, side, qty in PLAN:  # one order at a time: the invariant after each one's fills
                submit(r, OrderIntent(intent_id=iid, market="FUT", symbol=SYM, side=side, qty=D(qty), bundle_id=strategy))
                wait_until(lambda iid=iid: done(store, iid), timeout=30, message=f"{iid} done")
                trades[iid] = venue_trades(venue, client_order_id(iid, "mkt"))
                n_trades = sum(len(t) for t in trades.values())
                wait_until(lambda n=n_trades: (b := book(store)) and len(b.booked) == n, timeout=30,
                           message=f"{n_trades} venue trades booked")
                assert invariant_holds(store, venue), iid
            assert venue_amt(venue) == D("0.009") and invariant_holds(store, venue)
            rows = {p.strategy: p for p in views.virtual_positions(store, "main")}
            assert set(rows) == {"alpha", "beta"}  # nothing UNASSIGNED: every trade was Chimera's
            assert (rows["alpha"].qty, rows["beta"].qty) == (D("0.007"), D("0.002"))
            # alpha by hand from the venue's trades: the buy's volume-weighted price is the average cost,
            # the sell realizes (price - avg) * qty per trade; fees are the venue's commissions.
            buys, sells = trades["vp-a1"], trades["vp-a2"]
            avg = sum(D(t["price"]) * D(t["qty"]) for t in buys) / sum(D(t["qty"]) for t in buys)
            alpha = rows["alpha"]
            assert alpha.avg_cost == avg
            assert alpha.trading_pnl == sum((D(t["price"]) - avg) * D(t["qty"]) for t in sells)
            assert alpha.fees == sum(D(t["commission"]) for t in buys + sells) > 0
            assert alpha.realized_pnl == alpha.trading_pnl - alpha.fees
            # beta crossed zero: its cash flow = realized - the cost still held (any cost basis)
            beta = rows["beta"]
            cash = sum(D(t["price"]) * D(t["qty"]) * (1 if t["side"] == "SELL" else -1)
                       for t in trades["vp-b1"] + trades["vp-b2"])
            assert cash == beta.trading_pnl - beta.qty * beta.avg_cost
            # what beta holds was opened past zero by its buy: the average of those parts
            short, opened = D("0.004"), []
            for t in trades["vp-b2"]:
                closing = min(short, D(t["qty"]))
                short -= closing
                if D(t["qty"]) > closing:
                    opened.append((D(t["price"]), D(t["qty"]) - closing))
            assert beta.avg_cost == sum(p * q for p, q in opened) / sum(q for _, q in opened)
            assert beta.fills == len(trades["vp-b1"] + trades["vp-b2"])

            # a redelivered fill (same trade, new stream entry and key) is booked once
            version = book(store).version
            entry = next(f for _, f in r.xrange(keys.VENUE_REPORTS)
                         if decode(f).payload.exec_type == "TRADE" and decode(f).payload.trade_id)
            rep = decode(entry).payload
            Producer(r, WallClock()).publish(keys.VENUE_REPORTS, rep, "redelivered-trade", "main")
            Producer(r, WallClock()).publish(keys.VPOS_COMMANDS, Reconcile(scope="POSITIONS", requested_by="test"),
                                             "vp-recon-1", "main")
            wait_until(lambda: book(store).reconciled_at and book(store).version > version, timeout=20,
                       message="reconcile after the redelivery")
            assert len(book(store).booked) == n_trades and invariant_holds(store, venue)
            assert views.unassigned(store, "main") == []

            # an order placed at the venue by hand: its fill reaches vpos, no strategy explains it
            fut(venue).new_order(symbol=SYM, side="BUY", type="MARKET", qty=D("0.002"), client_id="manual-vp-1")
            wait_until(lambda: views.unassigned(store, "main"), timeout=20, message="UNASSIGNED from the fill")
            assert [u["qty"] for u in views.unassigned(store, "main")] == ["0.002"]
            assert venue_amt(venue) == D("0.011") and invariant_holds(store, venue)
            [ev] = wait_until(lambda: ops_events(r, "VIRTUAL_UNASSIGNED"), timeout=10, message="ops event")
            assert ev.detail["unassigned_qty"] == "0.002" and ev.detail["symbol"] == SYM
            assert "unknown client order id" in ev.detail["cause"]

        # user data is off now: a second manual order reaches vpos only through the reconcile
        fut(venue).new_order(symbol=SYM, side="BUY", type="MARKET", qty=D("0.001"), client_id="manual-vp-2")
        assert venue_amt(venue) == D("0.012") and not invariant_holds(store, venue)
        assert views.gaps(store, "main", fut(venue).position_risk()) == {(SYM, "BOTH"): (D("0.011"), D("0.012"))}
        Producer(r, WallClock()).publish(keys.VPOS_COMMANDS, Reconcile(scope="POSITIONS", requested_by="test"),
                                         "vp-recon-2", "main")
        wait_until(lambda: [u["qty"] for u in views.unassigned(store, "main")] == ["0.003"], timeout=20,
                   message="UNASSIGNED 0.003 after the reconcile")
        assert invariant_holds(store, venue) and views.gaps(store, "main", fut(venue).position_risk()) == {}
        assert {p.strategy: p.qty for p in views.virtual_positions(store, "all")} == {
            "alpha": D("0.007"), "beta": D("0.002"), vp.UNASSIGNED: D("0.003")}
        events = ops_events(r, "VIRTUAL_UNASSIGNED")
        assert events[-1].detail["cause"] == "reconcile" and events[-1].detail["venue_qty"] == "0.012"
        alerts = [decode(f).payload for _, f in r.xrange(keys.ALERTS)]
        assert [a.code for a in alerts if a.code == "VIRTUAL_UNASSIGNED"] == ["VIRTUAL_UNASSIGNED"] * 2


def test_reports_missed_then_caught_up_move_out_of_unassigned_and_funding_is_shared_pro_rata(r, env, venue):  # noqa: F811
    """No user data while two strategies trade: the reconcile can only call it UNASSIGNED. When S1's
    catch-up delivers the missed trades, each moves to its strategy (by trade id) and the sum never
    leaves the venue's. An ADL by the venue takes 2:1 from both, and a funding settlement is shared 2:1
    as the positions are."""
    s, store = env
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(VPOS, r, s, "vpos-a", store):
        for iid, strategy, qty in (("vp-c1", "alpha", "0.010"), ("vp-c2", "beta", "0.005")):
            submit(r, OrderIntent(intent_id=iid, market="FUT", symbol=SYM, side="BUY", qty=D(qty), bundle_id=strategy))
            wait_until(lambda iid=iid: done(store, iid), timeout=30, message=f"{iid} done")
        Producer(r, WallClock()).publish(keys.VPOS_COMMANDS, Reconcile(scope="POSITIONS", requested_by="test"),
                                         "vp-recon-c", "main")
        wait_until(lambda: [u["qty"] for u in views.unassigned(store, "main")] == ["0.015"], timeout=20,
                   message="everything UNASSIGNED while no report came")
        assert venue_amt(venue) == D("0.015") and invariant_holds(store, venue)
        with user_data(r, venue, s.store_url):
            # S1's catch-up at start reads the missed trades back from REST.
            traded = {client_order_id(i, "mkt") for i in ("vp-c1", "vp-c2")}
            wait_until(lambda: traded <= {p.client_order_id for p in (decode(f).payload for _, f in
                                                                     r.xrange(keys.VENUE_REPORTS))
                                          if p.exec_type == "TRADE"}, timeout=20, message="missed trades caught up")
            wait_until(lambda: {p.strategy: p.qty for p in views.virtual_positions(store, "main")}
                       == {"alpha": D("0.010"), "beta": D("0.005")}, timeout=20, message="caught-up fills attributed")
            assert views.unassigned(store, "main") == [] and invariant_holds(store, venue)
            rows = {p.strategy: p for p in views.virtual_positions(store, "main")}
            assert rows["alpha"].avg_cost == sum(D(t["price"]) * D(t["qty"]) for t in venue_trades(
                venue, client_order_id("vp-c1", "mkt"))) / D("0.010")
            assert book(store).position("BOTH", vp.UNASSIGNED).trading_pnl == 0  # moved there and back: no PnL

            # the venue auto-deleverages 0.006 of the 0.015: both strategies give their share, 2:1
            adl = venue.control("/chimera/v1/adl", {"account": "main", "symbol": SYM, "qty": "0.006"})
            wait_until(lambda: {p.strategy: p.qty for p in views.virtual_positions(store, "main")}
                       == {"alpha": D("0.006"), "beta": D("0.003")}, timeout=20, message="ADL shared pro rata")
            assert venue_amt(venue) == D("0.009") and invariant_holds(store, venue)
            assert views.unassigned(store, "main") == []
            rows = {p.strategy: p for p in views.virtual_positions(store, "main")}
            assert rows["alpha"].trading_pnl == (D(adl["price"]) - rows["alpha"].avg_cost) * D("0.004")

            mark = fut(venue).book(SYM).mid
            venue.control("/chimera/v1/market", {"events": [
                {"market": "futures", "symbol": SYM, "kind": "mark", "price": str(mark)},
                {"market": "futures", "symbol": SYM, "kind": "funding", "rate": "0.0001"}]})
            [rec] = wait_until(lambda: store.query("funding_records", {"account": "main", "symbol": SYM}), timeout=20,
                               message="funding record from S1")
        paid = D(rec["amount_usdt"])
        assert paid == D(venue.control("/chimera/v1/ledger?account=main")["funding"][-1]["fee"]) < 0  # longs pay
        Producer(r, WallClock()).publish(keys.VPOS_COMMANDS, Reconcile(scope="POSITIONS", requested_by="test"),
                                         "vp-recon-d", "main")
        wait_until(lambda: rec["tran_id"] in book(store).booked_funding, timeout=20, message="funding shared")
    rows = {p.strategy: p for p in views.virtual_positions(store, "main")}
    alpha, beta = rows["alpha"].funding, rows["beta"].funding
    assert alpha + beta == paid  # to the last 1e-8
    assert abs(alpha - paid * 2 / 3) <= D("1e-8") and abs(beta - paid / 3) <= D("1e-8")
    assert rows["alpha"].realized_pnl == rows["alpha"].trading_pnl - rows["alpha"].fees + alpha  # net


def test_a_periodic_reconcile_that_cannot_reach_the_venue_keeps_its_timer_and_alerts(tmp_path):
    """Nothing listens at the venue's address: the run alerts and arms the next one (the chain of
    periodic runs never hangs on a failed run); an on-demand run raises for the runtime to retry."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends: connection refused
    clients = {"main": Venue(FuturesTrading(dead, "k", "s", timeout_ms=500), SpotTrading(dead, "k", "s"))}
    c = Context(clock=ManualClock(1_000), store=open_store(f"sqlite:///{tmp_path}/s.sqlite"),
                config=ActiveConfig(bundle=MappingProxyType({"virtual.reconcile_ms": 30_000})),
                venues=Venues(clients=clients))
    periodic = Envelope(type="reconcile", idempotency_key="vpos:reconcile:main:31000", account_id="main",
                        payload=Reconcile(scope="POSITIONS", requested_by="vpos:periodic"))
    out = role.SPEC.handle(periodic, c)
    [timer] = [e for e in out if e.is_timer]
    assert timer.due_ms == 31_000 and timer.timer_key == keys.vpos_reconcile_timer("main")
    [alert] = [e.payload for e in out if e.stream == keys.ALERTS]
    assert alert.code == "VIRTUAL_RECONCILE_FAILED" and alert.context == {"account_id": "main"}
    on_demand = Envelope(type="reconcile", idempotency_key="x", account_id="main",
                         payload=Reconcile(scope="POSITIONS", requested_by="test"))
    with pytest.raises(RetryableError):
        role.SPEC.handle(on_demand, c)


def test_s5_reports_the_unassigned_quantity_and_its_close_takes_it_out_of_unassigned(r, env, venue):  # noqa: F811
    """A manual position at the venue: vpos books it UNASSIGNED, S5's run lists it in its report
    (``virtual_unassigned``) and closes it (``recon-close-...``); vpos books that close to UNASSIGNED,
    which ends flat, the strategies untouched, the sum equal to the venue's."""
    s, store = env
    s5 = HandlerSpec(role=S5.role, streams=S5.streams, routes=S5.routes)  # on demand only: no start-up run
    with ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(VPOS, r, s, "vpos-a", store), \
            ThreadWorker(s5, r, s, "s5-a", store), user_data(r, venue, s.store_url):
        fut(venue).new_order(symbol=SYM, side="BUY", type="MARKET", qty=D("0.010"), client_id="manual-vp-5")
        wait_until(lambda: [u["qty"] for u in views.unassigned(store, "main")] == ["0.010"], timeout=20,
                   message="manual fill UNASSIGNED")
        Producer(r, WallClock()).publish(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by="test"), "run-vp5")
        report = wait_until(lambda: store.get("strategy_events", "RECONCILE_RUN:run-vp5"), timeout=20,
                            message="S5 run")
        assert [(u["symbol"], u["qty"]) for u in report["virtual_unassigned"]] == [(SYM, "0.010")]
        assert [c["action"] for c in report["closed"]] == ["CLOSE_UNKNOWN"]
        wait_until(lambda: venue_amt(venue) == 0, timeout=20, message="S5's close at the venue")
        wait_until(lambda: book(store) and not vp.unassigned(book(store)) and invariant_holds(store, venue),
                   timeout=20, message="the close booked to UNASSIGNED")
    rows = views.virtual_positions(store, "main", include_flat=True)
    assert [(p.strategy, p.qty) for p in rows] == [(vp.UNASSIGNED, D(0))] and rows[0].fills >= 2
