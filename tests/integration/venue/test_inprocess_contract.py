"""Contract: the in-process venue answers exactly what the SDK-backed adapter gets from the venue server.

The same sequence of calls (market order, post-only limit, stop-market reduce-only, the refusals
-5022/-2021/-2022/-4116/-2011/-2013/-4046, queries by client id, positionRisk, userTrades, balances,
leverage) runs through ``adapter.FuturesTrading`` (official SDK → HTTP → venue server) and through
``InProcessExchange.venue().fut`` (engine called directly), with the same market events injected
at the same times; every answer and every raised error must be equal.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from chimera.venues.binance.adapter import (
    AlreadyAccepted,
    FuturesTrading,
    OrderNotFound,
    SpotTrading,
    VenueRejected,
)
from chimera.venues.local.inprocess import InProcessExchange
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue
from chimera.workers.clock import ManualClock
from tests.integration.venue.conftest import book, inject, mark, trade

T0 = 4_000_000_000_000  # far beyond the wall clock, so the server's injected times are exactly these
SYM = "BTCUSDT"
Q = Decimal("0.010")


def _at(t: int, *events: dict) -> list[dict]:
    return [{**e, "time": t} for e in events]


def _plain(x):
    if isinstance(x, list):
        return [_plain(i) for i in x]
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x


def _recorder(out: list):
    """``rec(label, fn, ...)``: call, append the answer (plain data) or the error raised, return the answer."""
    def rec(label, fn, *a, **kw):
        try:
            res = fn(*a, **kw)
        except VenueRejected as exc:
            out.append((label, "error", type(exc).__name__, exc.code, exc.msg))
            return None
        out.append((label, _plain(res)))
        return res
    return rec


def _run(fut, push) -> list:
    """The call sequence; ``push(events)`` injects market events. Returns every answer or error."""
    out: list = []
    rec = _recorder(out)
    push(_at(T0, trade(SYM, "30000"), book(SYM, "29999.9", "30000.1"), mark(SYM, "30000")))
    rec("margin_type", fut.set_margin_type, SYM, "ISOLATED")
    rec("leverage", fut.set_leverage, SYM, 10)
    entry = rec("market", fut.new_order, symbol=SYM, side="BUY", type="MARKET", qty=Q, client_id="c-mkt")
    rec("post_only", fut.new_order, symbol=SYM, side="BUY", type="LIMIT", qty=Q, price=Decimal("29990"),
        tif="GTX", client_id="c-gtx")
    rec("post_only_crossing", fut.new_order, symbol=SYM, side="BUY", type="LIMIT", qty=Q, price=Decimal("30001"),
        tif="GTX", client_id="c-gtx2")
    rec("duplicate", fut.new_order, symbol=SYM, side="BUY", type="LIMIT", qty=Q, price=Decimal("29980"),
        tif="GTX", client_id="c-gtx")
    rec("stop", fut.new_stop, symbol=SYM, side="SELL", type="STOP_MARKET", qty=Q, trigger=Decimal("29000"),
        client_id="c-stop")
    rec("stop_would_trigger", fut.new_stop, symbol=SYM, side="SELL", type="STOP_MARKET", qty=Q,
        trigger=Decimal("31000"), client_id="c-stop2")
    rec("reduce_only_wrong_side", fut.new_order, symbol=SYM, side="BUY", type="MARKET", qty=Q, client_id="c-ro",
        reduce_only=True)
    rec("query", fut.query, SYM, "c-gtx")
    rec("query_algo", fut.query, SYM, "c-stop", algo=True)
    rec("open_orders", fut.open_orders, SYM)
    rec("open_algo_orders", fut.open_algo_orders, SYM)
    rec("position_risk", fut.position_risk, SYM)
    rec("trades", fut.trades, SYM, entry.venue_order_id)
    rec("balance", fut.available_balance)
    rec("book", fut.book, SYM, 5)
    rec("cancel", fut.cancel, SYM, "c-gtx")
    rec("cancel_again", fut.cancel, SYM, "c-gtx")
    rec("query_unknown", fut.query, SYM, "c-nope")
    # The mark falls through the stop: it triggers and closes the position at market.
    push(_at(T0 + 60_000, trade(SYM, "28900"), book(SYM, "28899.9", "28900.1"), mark(SYM, "28900")))
    rec("query_algo_after", fut.query, SYM, "c-stop", algo=True)
    rec("position_after", fut.position_risk, SYM)
    stop_order = fut.query(SYM, "c-stop")
    rec("stop_trades", fut.trades, SYM, stop_order.venue_order_id)
    rec("force_orders", fut.force_orders, SYM)
    rec("balance_after", fut.available_balance)
    return out


def _both(tmp_path, run, market: str) -> dict:
    """``run`` through the SDK adapter against the venue server and through the in-process venue: every
    answer and error must be equal. Returns the in-process answers by label."""
    venue = start_venue(VenueConfig(data=[], state_file=str(tmp_path / "state.json")))
    try:
        key, secret = venue.keys["main"]
        client = (FuturesTrading if market == "fut" else SpotTrading)(venue.base_url, key, secret)
        over_http = run(client, lambda evs: inject(venue, *evs))
    finally:
        venue.stop()
    ex = InProcessExchange(ManualClock(T0 - 1))
    in_process = run(getattr(ex.venue("main"), market), lambda evs: ex.inject(*evs))
    assert [r[0] for r in in_process] == [r[0] for r in over_http]
    for a, b in zip(over_http, in_process, strict=True):
        assert a == b, f"{a[0]}:\n  server+SDK: {a}\n  in-process: {b}"
    return {r[0]: r for r in in_process}


def test_inprocess_venue_answers_like_the_sdk_adapter_against_the_server(tmp_path):
    by = _both(tmp_path, _run, "fut")
    # The figures themselves, worked out by hand from the injected book (ask 30000.1, taker 0.05%).
    assert by["margin_type"][1] is False  # -4046 "No need to change margin type." is success
    assert by["market"][1]["status"] == "FILLED" and by["market"][1]["avg_price"] == Decimal("30000.1")
    assert by["post_only"][1]["status"] == "NEW"
    assert by["post_only_crossing"][1:4] == ("error", "VenueRejected", -5022)
    assert by["duplicate"][1:4] == ("error", "AlreadyAccepted", -4116)
    assert by["stop_would_trigger"][1:4] == ("error", "VenueRejected", -2021)
    assert by["reduce_only_wrong_side"][1:4] == ("error", "VenueRejected", -2022)
    assert by["cancel_again"][1:4] == ("error", "OrderNotFound", -2011)
    assert by["query_unknown"][1:4] == ("error", "OrderNotFound", -2013)
    assert by["trades"][1][0]["commission"] == "0.15000050"  # 30000.1 * 0.010 * 0.0005
    assert by["query_algo_after"][1]["status"] == "FILLED"
    assert Decimal(by["position_after"][1][0]["positionAmt"]) == 0
    assert issubclass(AlreadyAccepted, VenueRejected) and issubclass(OrderNotFound, VenueRejected)


def test_inprocess_reports_are_what_s1_publishes():
    """Engine events → VenueReport with S1's idempotency key, in engine order (NEW, then TRADE)."""
    ex = InProcessExchange(ManualClock(T0 - 1))
    ex.inject(*_at(T0, trade(SYM, "30000"), book(SYM, "29999.9", "30000.1"), mark(SYM, "30000")))
    ex.drain_reports()
    ex.venue().fut.new_order(symbol=SYM, side="SELL", type="MARKET", qty=Q, client_id="c-a")
    reps = ex.drain_reports()
    assert [(r.exec_type, r.order_status) for r, _, _ in reps] == [("NEW", "NEW"), ("TRADE", "FILLED")]
    rep, key, account = reps[1]
    assert account == "main" and rep.client_order_id == "c-a" and rep.last_price == Decimal("29999.9")
    assert key == f"vr:main:FUT:{SYM}:{rep.venue_order_id}:t:{rep.trade_id}"
    assert rep.ts == T0


def _run_spot(spot, push) -> list:
    """Spot: market buy, LIMIT_MAKER resting and crossing (-2010), duplicate client id, OCO exit, queries."""
    out: list = []
    rec = _recorder(out)
    push(_at(T0, trade(SYM, "30000", "spot"), book(SYM, "29999.99", "30000.01", "spot")))
    buy = rec("market", spot.new_order, symbol=SYM, side="BUY", type="MARKET", qty=Decimal("0.01"), client_id="s-mkt")
    rec("maker", spot.new_order, symbol=SYM, side="BUY", type="LIMIT_MAKER", qty=Decimal("0.01"),
        price=Decimal("29000"), client_id="s-lm")
    rec("maker_crossing", spot.new_order, symbol=SYM, side="BUY", type="LIMIT_MAKER", qty=Decimal("0.01"),
        price=Decimal("30001"), client_id="s-lm2")
    rec("duplicate", spot.new_order, symbol=SYM, side="BUY", type="LIMIT_MAKER", qty=Decimal("0.01"),
        price=Decimal("28000"), client_id="s-lm")
    rec("oco", spot.oco, symbol=SYM, side="SELL", qty=Decimal("0.01"), tp_price=Decimal("31000"),
        sl_stop=Decimal("29500"), sl_limit=Decimal("29400"), list_client_id="s-oco", tp_client_id="s-tp",
        sl_client_id="s-sl")
    rec("top", spot.top_of_book, SYM)
    rec("book", spot.book, SYM, 5)
    rec("query", spot.query, SYM, "s-lm")
    rec("open_orders", spot.open_orders, SYM)
    rec("trades", spot.trades, SYM, buy.venue_order_id)
    rec("cancel", spot.cancel, SYM, "s-lm")
    rec("cancel_again", spot.cancel, SYM, "s-lm")
    push(_at(T0 + 60_000, trade(SYM, "31500", "spot")))  # through the take-profit
    rec("tp_after", spot.query, SYM, "s-tp")
    rec("sl_after", spot.query, SYM, "s-sl")
    return out


def test_inprocess_spot_answers_like_the_sdk_adapter_against_the_server(tmp_path):
    by = _both(tmp_path, _run_spot, "spot")
    assert by["market"][1]["status"] == "FILLED" and by["market"][1]["avg_price"] == Decimal("30000.01")
    assert by["maker"][1]["status"] == "NEW"
    assert by["maker_crossing"][1:4] == ("error", "VenueRejected", -2010)
    assert by["duplicate"][1:4] == ("error", "AlreadyAccepted", -2010)
    assert by["cancel_again"][1:4] == ("error", "OrderNotFound", -2011)
    assert (by["tp_after"][1]["status"], by["sl_after"][1]["status"]) == ("FILLED", "EXPIRED")
