"""Complete accounting on a live venue (issue 12 item 5): S1's user data, S4 and S6 as real workers on Redis
(single and the 6-node cluster) against the local venue through the official SDK; a position is opened,
funding settles while it is open, it is closed. The venue's own books are the truth: its wallet change
must equal Σ over the store's positions of realized PnL − fees + funding to 1e-8 USDT, and the store's
fills must be the venue's trades one to one.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.schemas.messages import OrderIntent
from chimera.store.collections import FILLS, FUNDING_RECORDS, POSITIONS
from chimera.workers.config import activate
from tests.integration.test_router_b1 import env, submit  # noqa: F401 - fixtures
from tests.support.futures_venue import btc_futures_venue, fut
from tests.support.polling import wait_until
from tests.support.positions import position, user_data
from tests.support.workers import ThreadWorker

SYM = "BTCUSDT"
RATE = "0.0005"


@pytest.fixture
def venue(tmp_path):
    with btc_futures_venue(tmp_path) as v:
        yield v


def venue_trades(venue) -> list:
    return venue.call(lambda: [t for t in venue.server.engine.trades if t.account == "main"])


def test_positions_carry_the_venues_fees_pnl_and_funding_and_the_books_balance(r, env, venue):  # noqa: F811
    s, store = env
    activate(store, "b", 1, {"positions": {"tick_ms": 0}})
    f = fut(venue)
    sl = (f.book(SYM).mid * Decimal("0.99")).quantize(Decimal("0.1"))
    with user_data(r, venue, s.store_url), ThreadWorker(S4, r, s, "s4-a", store), ThreadWorker(S6, r, s, "s6-a", store):
        submit(r, OrderIntent(intent_id="bk-1", market="FUT", symbol=SYM, side="BUY", qty=Decimal("0.010"),
                              exec_policy="MARKET", purpose="ENTRY", sl_price=sl))
        entry = wait_until(lambda: (p := position(store, "bk-1")) and p.state == "ACTIVE" and p.fees > 0 and p,
                           timeout=30, message="entry booked with its commission")
        venue.advance(events=200)
        # The venue settles funding on the open long (a long pays a positive rate).
        venue.control("/chimera/v1/market", {"events": [{"symbol": SYM, "kind": "funding", "rate": RATE}]})
        pos = wait_until(lambda: (p := position(store, "bk-1")) and p.funding != 0 and p, timeout=30,
                         message="the settlement booked on the position")
        assert pos.funding < 0 and store.query(FUNDING_RECORDS, {"symbol": SYM})
        venue.advance(events=200)
        submit(r, OrderIntent(intent_id="bk-1:exit", market="FUT", symbol=SYM, side="SELL", qty=Decimal("0.010"),
                              exec_policy="MARKET", purpose="EXIT", reduce_only=True, pos_id="bk-1"))
        trades = wait_until(lambda: len(venue_trades(venue)) >= 2 and venue_trades(venue), timeout=30,
                            message="the exit traded")
        ids = {f"{t.symbol}:{t.trade_id}" for t in trades}
        closed = wait_until(lambda: (p := position(store, "bk-1")) and p.state == "CLOSED"
                            and set(p.booked_trades) == ids and p, timeout=30,
                            message="every venue trade booked on the closed position")
        # S4 books a leg's trades into ``fills`` as a follow-up step (the ``book_fills`` timer), which may
        # run after S6 has closed the position from S1's reports: wait for it before the workers stop.
        want = sorted(f"FUT:{t.symbol}:{t.trade_id}" for t in trades)
        wait_until(lambda: sorted(d["_key"] for d in store.query(FILLS, {})) == want, timeout=30,
                   message="S4 booked every venue trade into fills")

    wallet = venue.call(lambda: venue.server.engine.wallet_history("main"))
    change = wallet["wallet_change"] - wallet["transfers"]
    positions = store.query(POSITIONS, {})
    books = sum((Decimal(p["realized_pnl"]) - Decimal(p["fees"]) + Decimal(p["funding"]) for p in positions),
                Decimal(0))
    assert abs(change - books) <= Decimal("1e-8"), (change, books)
    # Each part on its own: the venue's fills and income rows are what the position carries.
    assert closed.fees == sum((t.commission for t in trades), Decimal(0)) > entry.fees
    assert closed.realized_pnl == sum((t.realized_pnl for t in trades), Decimal(0)) != 0
    assert closed.funding == wallet["funding"] < 0
    # Store fills = venue trades, one to one.
    assert sorted(d["_key"] for d in store.query(FILLS, {})) == want


def test_a_report_or_settlement_delivered_again_under_another_key_is_booked_once():
    """S6's own de-duplication (``booked_trades``/``booked_funding``), not the runtime's idempotency key: S1
    may publish the same trade again after a reconnect's catch-up with another key."""
    from chimera.schemas.messages import FundingEvent
    from chimera.streams import keys
    from tests.unit.test_positions_inprocess import Chain

    c = Chain({})
    c.market("50000")
    c.open_long("dup", sl="49500")
    pos = c.position("dup")
    reports = [e.payload for e in c.rt.entries(keys.VENUE_REPORTS) if e.payload.exec_type == "TRADE"]
    assert pos.fees == sum((r.commission for r in reports), Decimal(0)) > 0 and len(pos.booked_trades) == len(reports)
    for i, rep in enumerate(reports):  # the same trades again, under new keys
        c.rt.publish(keys.VENUE_REPORTS, rep, f"again-{i}", account_id="main", event_time=c.clock.now_ms())
    settle = FundingEvent(symbol=SYM, funding_time=c.clock.now_ms(), rate=Decimal("0.0001"), settled=True,
                          amount_usdt=Decimal("-0.05000001"), tran_id="77")
    for i in range(2):
        c.rt.publish(keys.POS_COMMANDS, settle, f"funding-{i}", account_id="main", event_time=c.clock.now_ms())
    c.deliver()
    again = c.position("dup")
    assert (again.fees, again.realized_pnl) == (pos.fees, pos.realized_pnl)
    assert again.funding == Decimal("-0.05000001") and again.booked_funding == ("main:77",)
