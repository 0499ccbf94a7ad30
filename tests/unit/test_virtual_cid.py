"""The client order id as the attribution key of virtual positions.

``client_order_id(intent_id, leg)`` (venues/binance/adapter.py) is what every Chimera order carries
at the venue; a fill is attributed by finding the leg S4 stored under that id, then its intent's
bundle. So the id must be within Binance's rules, a function of (intent, leg) only, and never the
same for two different legs: a collision would book one strategy's fill to another.
"""

from __future__ import annotations

import re
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.accounts import virtual as vp
from chimera.accounts.attribution import attribute
from chimera.handlers.router.toolkit import ensure_leg, new_leg
from chimera.schemas.documents.orders import IntentDoc, to_doc
from chimera.schemas.messages import OrderIntent
from chimera.store import open_store
from chimera.store.collections import ORDER_INTENTS, POSITIONS
from chimera.venues.binance.adapter import client_order_id

BINANCE_CID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
# S4's leg names ("e", "mk", "tk", "tw3", "sl", "otp", "adopted", ...) are letters and digits.
legs = st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True)
intent_ids = st.text(min_size=1, max_size=80)  # anything: pos ids, uuids, "<pos_id>:sl3", unicode
strategies = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


@settings(max_examples=500, deadline=None)
@given(intent_ids, legs)
def test_within_binance_rules_and_deterministic(intent_id, leg):
    cid = client_order_id(intent_id, leg)
    assert BINANCE_CID.match(cid) and len(cid) <= 36
    assert client_order_id(intent_id, leg) == cid


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(intent_ids, legs, strategies), min_size=2, max_size=60,
                unique_by=lambda t: (t[0], t[1])))
def test_collision_free_over_intent_leg_strategy_triples(triples):
    cids = [client_order_id(i, leg) for i, leg, _ in triples]
    assert len(set(cids)) == len(triples)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z0-9:-]{1,30}", fullmatch=True), legs, strategies),
                min_size=1, max_size=12, unique_by=lambda t: t[0]))
def test_attribution_finds_each_triples_strategy(triples):
    """Stored the way S4 stores them (intent, then its leg, before the order is sent), every triple's
    client id resolves to its own intent, leg and strategy (= the intent's bundle)."""
    store = open_store("memory://")
    for iid, leg, strategy in triples:
        oi = OrderIntent(intent_id=iid, market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.01"),
                         bundle_id=strategy)
        store.upsert(ORDER_INTENTS, iid, to_doc(IntentDoc.new(oi, 0, account_id="sub1")))
        ensure_leg(store, new_leg(store.get(ORDER_INTENTS, iid), leg, order_type="MARKET", side="BUY",
                                  qty=Decimal("0.01"), now_ms=0))
    for iid, leg, strategy in triples:
        got = attribute(store, client_order_id(iid, leg))
        assert (got.strategy, got.intent_id, got.leg, got.account_id, got.why) == (strategy, iid, leg, "sub1", "intent")


def test_derived_intents_take_their_positions_bundle_and_unknown_ids_are_unassigned():
    store = open_store("memory://")
    store.upsert(POSITIONS, "p1", {"pos_id": "p1", "bundle_id": "breakout"})
    for iid, extra in (("p1:sl1", {"pos_id": "p1"}), ("op-1", {}), ("p9:tp1", {"parent_intent_id": "p9"}),
                       ("p9", {"bundle_id": "meanrev"}), ("recon-close-r1-BTCUSDT-BUY", {"purpose": "FLATTEN"})):
        oi = OrderIntent(intent_id=iid, market="FUT", symbol="BTCUSDT", side="SELL", qty=Decimal("1"), **extra)
        store.upsert(ORDER_INTENTS, iid, to_doc(IntentDoc.new(oi, 0)))
        ensure_leg(store, new_leg(store.get(ORDER_INTENTS, iid), "sl", order_type="STOP_MARKET", side="SELL",
                                  qty=Decimal("1"), now_ms=0))
    assert attribute(store, client_order_id("p1:sl1", "sl")).strategy == "breakout"  # via the position
    assert attribute(store, client_order_id("p9:tp1", "sl")).strategy == "meanrev"  # via the parent intent
    assert attribute(store, client_order_id("op-1", "sl")).strategy == vp.MANUAL  # an operator's order
    # S5 flattening a venue position nothing explained: it takes back from UNASSIGNED, where that sat
    assert attribute(store, client_order_id("recon-close-r1-BTCUSDT-BUY", "sl")).strategy == vp.UNASSIGNED
    for cid in ("manual-1", "autoclose-1751760000000", "adl_autoclose", ""):
        got = attribute(store, cid)
        assert got.strategy == vp.UNASSIGNED and got.why == "unknown client order id"
