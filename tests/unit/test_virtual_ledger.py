"""The virtual-position ledger (chimera/accounts/virtual.py), no I/O.

Hand-worked examples first (every figure below is computed by hand in the comment), then
hypothesis properties against an independent reference: exact Fractions for the weighted average
cost, the cash-flow identity for the realized PnL, and a plain net of the fills for the sums.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.accounts import virtual as vp

D = Decimal


def pos(strategy: str = "alpha", side: str = "BOTH") -> vp.VirtualPosition:
    return vp.VirtualPosition(account_id="main", symbol="BTCUSDT", position_side=side, strategy=strategy)


def test_weighted_average_cost_reduce_and_flip_by_hand():
    p = vp.apply_fill(pos(), side="BUY", qty=D("1"), price=D("100"), fee=D("0.04"))
    p = vp.apply_fill(p, side="BUY", qty=D("1"), price=D("110"), fee=D("0.044"))
    assert (p.qty, p.avg_cost) == (D("2"), D("105"))  # (100 + 110) / 2
    p = vp.apply_fill(p, side="SELL", qty=D("0.5"), price=D("120"), fee=D("0.024"))
    # reduce: (120 - 105) * 0.5 = 7.5 realized, the average stays
    assert (p.qty, p.avg_cost, p.trading_pnl) == (D("1.5"), D("105"), D("7.5"))
    p = vp.apply_fill(p, side="SELL", qty=D("2"), price=D("100"), fee=D("0.08"))
    # crosses zero: 1.5 closed at (100 - 105) * 1.5 = -7.5, the other 0.5 opens short at 100
    assert (p.qty, p.avg_cost, p.trading_pnl) == (D("-0.5"), D("100"), D("0"))
    assert p.fees == D("0.188")  # 0.04 + 0.044 + 0.024 + 0.08
    assert p.realized_pnl == D("-0.188")  # net: 0 trading - 0.188 fees
    p = vp.apply_fill(p, side="BUY", qty=D("0.5"), price=D("90"))
    # short closed: (90 - 100) * 0.5 * -1 = +5
    assert (p.qty, p.avg_cost, p.trading_pnl, p.realized_pnl) == (D("0"), D("0"), D("5"), D("4.812"))
    assert p.fills == 5


def test_funding_and_foreign_fees_in_the_net():
    p = vp.apply_fill(pos(), side="BUY", qty=D("1"), price=D("100"), fee=D("0.01"), fee_asset="BNB")
    assert p.fees == 0 and p.fees_other == {"BNB": D("0.01")} and p.realized_pnl == 0
    p = vp.apply_funding(p, D("-0.25"))
    assert (p.funding, p.realized_pnl) == (D("-0.25"), D("-0.25"))


def test_bad_fills_are_refused():
    with pytest.raises(ValueError, match="BUY or SELL"):
        vp.apply_fill(pos(), side="LONG", qty=D("1"), price=D("1"))
    with pytest.raises(ValueError, match="positive"):
        vp.apply_fill(pos(), side="BUY", qty=D("0"), price=D("1"))
    with pytest.raises(ValueError, match="position side"):
        vp.book_fill(vp.new_book("main", "BTCUSDT"), trade_id="1", strategy="a", side="BUY", qty=D("1"),
                     price=D("1"), position_side="UP")


def test_hedge_mode_sides_are_separate_books_of_signed_quantity():
    """Hedge mode (positionSide LONG/SHORT; the local venue is one-way only, so these fills are made up
    in Binance's shape): a LONG and a SHORT of the same strategy on one symbol never net."""
    b = vp.new_book("main", "ETHUSDT")
    b, _ = vp.book_fill(b, trade_id="1", strategy="alpha", side="BUY", qty=D("2"), price=D("3000"), position_side="LONG")
    b, _ = vp.book_fill(b, trade_id="2", strategy="alpha", side="SELL", qty=D("1"), price=D("3010"), position_side="SHORT")
    b, _ = vp.book_fill(b, trade_id="3", strategy="beta", side="SELL", qty=D("3"), price=D("3020"), position_side="SHORT")
    b, _ = vp.book_fill(b, trade_id="4", strategy="alpha", side="SELL", qty=D("1"), price=D("3050"), position_side="LONG")
    assert (b.total("LONG"), b.total("SHORT")) == (D("1"), D("-4"))
    long_ = b.position("LONG", "alpha")
    assert (long_.qty, long_.avg_cost, long_.trading_pnl) == (D("1"), D("3000"), D("50"))  # (3050-3000)*1
    short = b.position("SHORT", "alpha")
    assert (short.qty, short.avg_cost, short.trading_pnl) == (D("-1"), D("3010"), D("0"))
    # Binance reports the SHORT side's positionAmt negative: the reconcile compares like with like.
    venue = {"LONG": (D("1"), D("3000")), "SHORT": (D("-4"), D("3017.5"))}
    b2, moved = vp.reconcile(b, venue, last_trade_id=4)
    assert moved == {} and vp.unassigned(b2) == {}
    # funding on the net (1 - 4 = -3): a short receives when longs pay
    b3, _ = vp.book_funding(b2, tran_id="f1", amount=D("0.9"))
    shares = {p.key: p.funding for p in b3.positions}
    assert shares == {("LONG", "alpha"): D("-0.3"), ("SHORT", "alpha"): D("0.3"), ("SHORT", "beta"): D("0.9")}


def test_a_trade_is_booked_once():
    b = vp.new_book("main", "BTCUSDT")
    b, first = vp.book_fill(b, trade_id="7", strategy="alpha", side="BUY", qty=D("1"), price=D("10"))
    b2, again = vp.book_fill(b, trade_id="7", strategy="alpha", side="BUY", qty=D("1"), price=D("10"))
    assert (first, again) == (True, False) and b2 is b and b.total("BOTH") == 1


def test_reconcile_moves_the_difference_to_unassigned_and_a_late_report_takes_it_back():
    b = vp.new_book("main", "BTCUSDT")
    b, _ = vp.book_fill(b, trade_id="1", strategy="alpha", side="BUY", qty=D("1"), price=D("100"), ts=1000)
    # the venue also holds a manual 0.3 (and strategy trade 2, whose report is late: the venue's newest is 2)
    b, moved = vp.reconcile(b, {"BOTH": (D("1.5"), D("100"))}, last_trade_id=2)
    assert moved == {"BOTH": D("0.5")} and vp.unassigned(b) == {"BOTH": D("0.5")} and b.total("BOTH") == D("1.5")
    b, _ = vp.book_fill(b, trade_id="2", strategy="beta", side="BUY", qty=D("0.2"), price=D("101"), ts=1000)
    # the late fill was in the venue's quantity already: it moves from UNASSIGNED to beta, sum unchanged
    assert b.total("BOTH") == D("1.5") and vp.unassigned(b) == {"BOTH": D("0.3")}
    assert b.position("BOTH", "beta").qty == D("0.2") and b.position("BOTH", vp.UNASSIGNED).trading_pnl == 0
    # trade 3 came after that reading: booked to alpha alone (same millisecond, told apart by the id)
    b, _ = vp.book_fill(b, trade_id="3", strategy="alpha", side="SELL", qty=D("1"), price=D("110"), ts=1000)
    assert b.total("BOTH") == D("0.5") and b.position("BOTH", "alpha").trading_pnl == D("10")


def test_funding_shares_add_up_exactly():
    held = [vp.msgspec.structs.replace(pos(s), qty=D(q)) for s, q in (("a", "1"), ("b", "1"), ("c", "1"))]
    shares = vp.funding_shares(held, D("-1"))
    assert sum(shares.values()) == D("-1") and set(shares.values()) <= {D("-0.33333333"), D("-0.33333334")}
    assert vp.funding_shares([pos("a")], D("5")) == {}
    b, _ = vp.book_funding(vp.new_book("main", "BTCUSDT"), tran_id="t", amount=D("2"))
    assert b.position("BOTH", vp.UNASSIGNED).funding == D("2")  # nobody held it


# --- properties -------------------------------------------------------------------------------------

STRATS = ("alpha", "beta", "gamma", vp.UNASSIGNED)
qtys = st.integers(1, 5000).map(lambda n: D(n) / 1000)  # 0.001 .. 5 in exchange steps
prices = st.integers(1000, 200000).map(lambda n: D(n) / 10)  # 100.0 .. 20000.0 in ticks
fees = st.integers(0, 1000).map(lambda n: D(n) / 10**6)
fill = st.tuples(st.sampled_from(STRATS), st.sampled_from(("BUY", "SELL")), qtys, prices, fees,
                 st.sampled_from(("BOTH", "LONG", "SHORT")))


class RefPosition:
    """Reference WAC in exact fractions, written from the definition, not from the ledger."""

    def __init__(self) -> None:
        self.qty, self.cost, self.realized = Fraction(0), Fraction(0), Fraction(0)  # cost = qty * avg

    def fill(self, signed: Fraction, price: Fraction) -> None:
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            self.qty, self.cost = self.qty + signed, self.cost + signed * price
            return
        closing = min(abs(signed), abs(self.qty)) * (1 if signed > 0 else -1)  # same sign as the fill
        avg = self.cost / self.qty
        self.realized += -closing * (price - avg)
        self.qty += closing
        self.cost = self.qty * avg
        rest = signed - closing
        if rest:
            self.qty, self.cost = rest, rest * price


@settings(max_examples=300, deadline=None)
@given(st.lists(fill, max_size=60))
def test_sums_wac_and_realized_pnl_match_independent_references(fills):
    b = vp.new_book("main", "BTCUSDT")
    net: dict[str, Decimal] = defaultdict(Decimal)
    refs: dict[tuple[str, str], RefPosition] = defaultdict(RefPosition)
    cash: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    paid: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for i, (strategy, side, qty, price, fee, pside) in enumerate(fills):
        b, booked = vp.book_fill(b, trade_id=str(i), strategy=strategy, side=side, qty=qty, price=price, fee=fee,
                                 position_side=pside, ts=i + 1)
        assert booked
        signed = qty if side == "BUY" else -qty
        net[pside] += signed
        refs[(pside, strategy)].fill(Fraction(signed), Fraction(price))
        cash[(pside, strategy)] -= signed * price
        paid[(pside, strategy)] += fee
        # the invariant after every fill: Σ per position side = the plain net of every fill there
        for s in ("BOTH", "LONG", "SHORT"):
            assert b.total(s) == net[s]
    tiny = Decimal("1e-12")
    for p in b.positions:
        ref = refs[p.key]
        assert p.qty == ref.qty
        ref_avg = ref.cost / ref.qty if ref.qty else Fraction(0)
        assert abs(p.avg_cost - Decimal(ref_avg.numerator) / Decimal(ref_avg.denominator)) < tiny
        assert abs(p.trading_pnl - Decimal(ref.realized.numerator) / Decimal(ref.realized.denominator)) < tiny
        # cash-flow identity of any cost basis: what was paid and received = realized - cost still held
        assert abs(cash[p.key] - (p.trading_pnl - p.qty * p.avg_cost)) < Decimal("1e-9")
        assert p.fees == paid[p.key] and p.realized_pnl == p.trading_pnl - p.fees


event = st.one_of(
    st.tuples(st.just("trade"), st.sampled_from(STRATS), st.sampled_from(("BUY", "SELL")), qtys, prices),
    st.tuples(st.just("deliver"), st.integers(1, 3)),
    st.tuples(st.just("redeliver")),
    st.tuples(st.just("reconcile")),
    st.tuples(st.just("funding"), st.integers(-500, 500).map(lambda n: D(n) / 100)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=80))
def test_invariant_through_late_reports_redeliveries_reconciles_and_funding(events):
    """A model venue applies trades at once; their reports reach the ledger later (in order), some
    twice. At every step Σ virtual = the venue's quantity minus what is still in flight and was not
    yet seen by a reconcile; each strategy holds exactly the net of its own reported fills; funding
    shares add up to what the venue paid."""
    b = vp.new_book("main", "BTCUSDT")
    venue_qty, last_trade, last_price = D(0), 0, D("100")
    queue: list[tuple] = []  # (trade id, strategy, side, qty, price, ts), not yet reported
    delivered: list[tuple] = []
    covered = D(0)  # in-flight quantity a reconcile already moved to UNASSIGNED
    own: dict[str, Decimal] = defaultdict(Decimal)
    funding_paid = D(0)
    for n, ev in enumerate(events):
        if ev[0] == "trade":
            _, strategy, side, qty, price = ev
            last_trade += 1
            venue_qty += qty if side == "BUY" else -qty
            last_price = price
            queue.append((str(last_trade), strategy, side, qty, price, 0))  # one venue millisecond for all
        elif ev[0] in ("deliver", "redeliver"):
            batch = [queue.pop(0) for _ in range(min(ev[1], len(queue)))] if ev[0] == "deliver" else delivered[-1:]
            for tid, strategy, side, qty, price, ts in batch:
                b, booked = vp.book_fill(b, trade_id=tid, strategy=strategy, side=side, qty=qty, price=price, ts=ts)
                assert booked == (ev[0] == "deliver")
                if booked:
                    own[strategy] += qty if side == "BUY" else -qty
                    delivered.append((tid, strategy, side, qty, price, ts))
                    if int(tid) <= b.venue_seen_trade:
                        covered -= qty if side == "BUY" else -qty
        elif ev[0] == "reconcile":
            b, _ = vp.reconcile(b, {"BOTH": (venue_qty, last_price)}, last_trade)
            covered = sum(((q if s == "BUY" else -q) for _, _, s, q, _, _ in queue), D(0))
            assert b.total("BOTH") == venue_qty  # after every reconcile
        else:
            b, _ = vp.book_funding(b, tran_id=f"f{n}", amount=ev[1])
            funding_paid += ev[1]
        in_flight = sum(((q if s == "BUY" else -q) for _, _, s, q, _, _ in queue), D(0))
        assert b.total("BOTH") == venue_qty - in_flight + covered
        for strategy in ("alpha", "beta", "gamma"):
            assert b.position("BOTH", strategy).qty == own[strategy]
        assert sum((p.funding for p in b.positions), D(0)) == funding_paid
    # once every report is in and a reconcile ran, the books equal the venue and nothing moves
    for tid, strategy, side, qty, price, ts in queue:
        b, _ = vp.book_fill(b, trade_id=tid, strategy=strategy, side=side, qty=qty, price=price, ts=ts)
    b, moved = vp.reconcile(b, {"BOTH": (venue_qty, last_price)}, last_trade)
    assert b.total("BOTH") == venue_qty
    b2, moved2 = vp.reconcile(b, {"BOTH": (venue_qty, last_price)}, last_trade)
    assert moved2 == {} and b2.positions == b.positions


def test_book_document_round_trip():
    b = vp.new_book("sub1", "BTCUSDT")
    b, _ = vp.book_fill(b, trade_id="1", strategy="alpha", side="BUY", qty=D("0.003"), price=D("30000.1"),
                        fee=D("0.036"), ts=5)
    b, _ = vp.reconcile(b, {"BOTH": (D("0.004"), D("30000"))}, 1, now_ms=9)
    again = vp.from_doc(vp.to_doc(b))
    assert again == b and isinstance(again.positions[0].qty, Decimal) and again.key == "sub1:FUT:BTCUSDT"


def test_a_forced_close_is_shared_by_the_holders_pro_rata():
    b = vp.new_book("main", "BTCUSDT")
    for tid, strategy, qty in (("1", "alpha", "0.010"), ("2", "beta", "0.005"), ("3", vp.UNASSIGNED, "0.003")):
        b, _ = vp.book_fill(b, trade_id=tid, strategy=strategy, side="BUY", qty=D(qty), price=D("30000"))
    # ADL of 0.009 of the 0.018 held: each holder gives half (0.005, 0.0025, 0.0015), realized at 29000
    b, _ = vp.book_forced_close(b, trade_id="4", side="SELL", qty=D("0.009"), price=D("29000"))
    got = {p.strategy: (p.qty, p.trading_pnl) for p in b.positions}
    assert got == {"alpha": (D("0.005"), D("-5")), "beta": (D("0.0025"), D("-2.5")),
                   vp.UNASSIGNED: (D("0.0015"), D("-1.5"))}  # (29000 - 30000) * share
    # a reconcile that saw the liquidation before its report: the report puts it where it belongs
    venue = {"BOTH": (D("0"), D("0"))}
    b, moved = vp.reconcile(b, venue, last_trade_id=5)
    assert moved == {"BOTH": D("-0.009")} and b.total("BOTH") == 0
    b, _ = vp.book_forced_close(b, trade_id="5", side="SELL", qty=D("0.009"), price=D("28000"))
    assert {p.strategy: p.qty for p in b.positions} == {"alpha": 0, "beta": 0, vp.UNASSIGNED: 0}
    assert b.position("BOTH", "alpha").trading_pnl == D("-15")  # -5 + (28000 - 30000) * 0.005


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STRATS), st.sampled_from(("BUY", "SELL")), qtys), min_size=1, max_size=8),
       st.integers(1, 100))
def test_forced_close_keeps_the_sum_and_never_takes_more_than_held(fills, pct):
    b = vp.new_book("main", "BTCUSDT")
    for i, (strategy, side, qty) in enumerate(fills):
        b, _ = vp.book_fill(b, trade_id=str(i), strategy=strategy, side=side, qty=qty, price=D("100"))
    net = b.total("BOTH")
    if not net:
        return
    side, qty = ("SELL" if net > 0 else "BUY"), (abs(net) * pct / 100).quantize(D("0.001"))
    if not qty:
        return
    before = {p.strategy: p.qty for p in b.positions}
    b, _ = vp.book_forced_close(b, trade_id="x", side=side, qty=qty, price=D("90"))
    assert b.total("BOTH") == net + (qty if side == "BUY" else -qty)
    for p in b.positions:
        was = before.get(p.strategy, D(0))
        assert abs(p.qty) <= abs(was) or p.strategy == vp.UNASSIGNED  # only reduced, never flipped
        assert (p.qty == 0) or (p.qty > 0) == (was > 0) or p.strategy == vp.UNASSIGNED
