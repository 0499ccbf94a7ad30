"""Which strategy a venue fill belongs to: attribution through the client order id.

Every order Chimera sends carries ``newClientOrderId = client_order_id(intent_id, leg)``
(``venues/binance/adapter.py``: deterministic, <= 36 chars of ``[.A-Z:/a-z0-9_-]``). S4 writes the
leg's document (``orders/<intent_id>:<leg>`` with that client id) and its intent
(``order_intents/<intent_id>``) *before* the order goes on the wire, so by the time the venue
reports a fill, the record ``client id -> (intent, leg) -> account, bundle`` already exists. No
strategy tag is squeezed into the 36 characters and no existing id changes.

The strategy of an intent is its bundle (``bundle_id``, set by S3 on entries); an intent S6
derived from a position (stop, take-profit, add, FLATTEN: ``<pos_id>:...``) takes the bundle of
its position, else of its parent intent. An order Chimera sent with no bundle behind it (an
operator's order through the gateway) is ``manual``; S5's close of a venue position nothing explains
(``recon-close-...``) reduces ``UNASSIGNED``, where that quantity sits. A client id with no leg document (an order
placed at the venue by hand, a liquidation's ``autoclose-...``) is ``UNASSIGNED``; so is one
matching two different legs, which a hash collision would mean (reported, never guessed).
"""

from __future__ import annotations

from dataclasses import dataclass

from chimera.accounts.virtual import MANUAL, UNASSIGNED
from chimera.store.collections import ORDER_INTENTS, ORDERS, POSITIONS


@dataclass(frozen=True)
class Attribution:
    strategy: str
    why: str  # intent | position | parent | manual | unknown client order id | ambiguous client order id
    intent_id: str = ""
    leg: str = ""
    account_id: str = ""  # the account S4 sent the leg to ("" when unknown)

    @property
    def assigned(self) -> bool:
        return self.strategy != UNASSIGNED


def attribute(store, client_order_id: str, memo: dict | None = None) -> Attribution:
    """The strategy of the order with this client id (``memo``: a per-worker cache of resolved ids)."""
    if memo is not None and client_order_id in memo:
        return memo[client_order_id]
    legs = store.query(ORDERS, {"client_order_id": client_order_id}, limit=2) if client_order_id else []
    if not legs:
        return Attribution(UNASSIGNED, "unknown client order id")
    if len({(d.get("intent_id"), d.get("leg")) for d in legs}) > 1:
        return Attribution(UNASSIGNED, "ambiguous client order id")
    leg = legs[0]
    intent = store.get(ORDER_INTENTS, leg["intent_id"]) or {}
    strategy, why = _bundle(store, intent, leg)
    got = Attribution(strategy, why, leg["intent_id"], leg.get("leg", ""),
                      str(intent.get("account_id") or leg.get("account_id") or ""))
    if memo is not None:
        if len(memo) >= MEMO_SIZE:
            memo.clear()  # a cache, not state: re-reading two documents is cheap
        memo[client_order_id] = got  # the documents behind it never change their bundle
    return got


MEMO_SIZE = 50_000  # client ids remembered per worker

# S5 closing a venue position nothing explains (``reconciler/positions.py``): it reduces UNASSIGNED.
RECON_CLOSE_PREFIX = "recon-close-"


def _bundle(store, intent: dict, leg: dict) -> tuple[str, str]:
    if str(intent.get("intent_id") or leg.get("intent_id") or "").startswith(RECON_CLOSE_PREFIX):
        return UNASSIGNED, "reconciler close of an unknown position"
    if intent.get("bundle_id"):
        return str(intent["bundle_id"]), "intent"
    pos_id = intent.get("pos_id") or leg.get("pos_id")
    pos = store.get(POSITIONS, pos_id) if pos_id else None
    if pos and pos.get("bundle_id"):
        return str(pos["bundle_id"]), "position"
    parent = store.get(ORDER_INTENTS, intent["parent_intent_id"]) if intent.get("parent_intent_id") else None
    if parent and parent.get("bundle_id"):
        return str(parent["bundle_id"]), "parent"
    return MANUAL, "manual"
