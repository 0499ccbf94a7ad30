"""What the chaos drill asserts once the chaos is over, each read from its source of truth.

* resolution — every Decide has a recorded decision; an ``open`` one has its intent DONE at S4
  with a final result (FILLED, or REJECTED with a reason); a ``skip`` carries its reason;
* exactly one entry order per intent — counted on the *venue's* engine by client order id, never
  from Chimera's store; an intent the store calls rejected must have no order at the venue;
* protection — every venue position is covered by open reduce-only stops at the venue, and every
  open store position has a stop of its own open at the venue (or an armed guard in ``guard_stops``, spot);
* accounts — every order the venue holds under one of Chimera's client ids sits at the account its
  leg names (``cross_account``: 0 expected), and per account the open store positions add up to the
  venue's position per symbol and side (``quantity_mismatches``); protection is checked per account;
* consistency — an S5 run with zero differences (``chimera.ops.tools.drill`` drives that part);
* books — per account, the venue's wallet change (its income, read through the SDK) equals Σ realized PnL
  − fees + funding over the store's positions to 1e-8 USDT, and the store's fills are the venue's trades one
  to one (``chimera books``, chimera/ops/books.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from chimera.errors import FatalError
from chimera.ops.books import live_books
from chimera.schemas.envelope import decode
from chimera.store import collections as C
from chimera.streams import keys
from chimera.venues.binance.adapter import client_order_id
from chimera.venues.binance.user_data import seen_member, trade_member
from chimera.venues.local.engine.model import FUTURES

ENTRY_LEG = "mkt"  # the drill bundle's entries are MARKET orders (S4 leg "mkt")


@dataclass
class Resolution:
    filled: list[str] = field(default_factory=list)  # intent ids
    rejected: Counter = field(default_factory=Counter)  # reason -> intents
    rejected_ids: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # decision reason -> signals
    lost: list[str] = field(default_factory=list)  # signal ids without a final outcome, and where they stopped

    @property
    def done(self) -> bool:
        return not self.lost


def resolution(store, signal_ids: list[str]) -> Resolution:
    out = Resolution()
    for sid in signal_ids:
        decision = (store.get(C.SIGNALS, sid) or {}).get("decision")
        if not decision:
            out.lost.append(f"{sid}: no decision")
            continue
        if decision["action"] != "open":
            out.skipped[decision.get("reason") or "?"] += 1
            continue
        iid = decision["intent_id"]
        intent = store.get(C.ORDER_INTENTS, iid)
        result = (intent or {}).get("result") or {}
        if intent is None or intent.get("phase") != "DONE" or not result:
            out.lost.append(f"{sid}: intent {iid} phase {(intent or {}).get('phase', 'never seen by S4')}")
        elif result["status"] == "FILLED":
            out.filled.append(iid)
        elif result.get("reason"):
            out.rejected[f"{result['status']}: {result['reason'].split(';')[0][:60]}"] += 1
            out.rejected_ids.append(iid)
        else:
            out.lost.append(f"{sid}: intent {iid} ended {result['status']} without a reason")
    return out


@dataclass
class VenueOrders:
    duplicates: int = 0  # extra entry orders at the venue beyond one per intent
    missing: list[str] = field(default_factory=list)  # filled in the store, no order at the venue
    phantom: list[str] = field(default_factory=list)  # rejected in the store, yet an order at the venue


def lost_results(r, filled: list[str]) -> list[str]:
    """Filled intents whose FILLED ``OrderResult`` is not on ``ord:{results}``: S4 published it (the intent
    is DONE in the store), Redis acknowledged it, and a failover lost it before the replica had it. S6 then
    never opens the position and S5 adopts it. Expected empty: S4's ack waits for a replica to hold its
    output (streams/redis.py, "replication"); counted so a drill proves it."""
    seen = set()
    for _id, fields in r.xrange(keys.ORD_RESULTS):
        res = decode(fields).payload
        if getattr(res, "status", "") == "FILLED":
            seen.add(res.intent_id)
    return [i for i in filled if i not in seen]


def venue_client_ids(venue, prefix: str = "") -> Counter:
    orders = venue.call(lambda: list(venue.server.engine.orders.values()))
    return Counter(o.client_id for o in orders if o.client_id.startswith(prefix))


def entry_orders(venue, res: Resolution) -> VenueOrders:
    counts = venue_client_ids(venue, f"c{ENTRY_LEG}-")
    out = VenueOrders()
    for iid in res.filled:
        n = counts[client_order_id(iid, ENTRY_LEG)]
        out.duplicates += max(0, n - 1)
        if n == 0:
            out.missing.append(iid)
    for iid in res.rejected_ids:
        n = counts[client_order_id(iid, ENTRY_LEG)]
        out.duplicates += max(0, n - 1)
        if n:
            out.phantom.append(iid)
    return out


@dataclass
class Protection:
    positions: dict[str, str] = field(default_factory=dict)  # venue symbol -> amount
    uncovered: list[str] = field(default_factory=list)
    store_open: int = 0
    extra_stops: int = 0  # positions with more than one open stop of their own


def _venue_book(venue, account: str = "main"):
    def snap():
        eng = venue.server.engine
        pos = {s: p.amt for s, p in eng.accounts[account].positions.items() if p.amt}
        stops = [(o.client_id, o.symbol, o.side, o.orig_qty - o.executed_qty) for o in eng.orders.values()
                 if o.market == FUTURES and o.account == account and o.status == "NEW" and o.reduce_only
                 and o.stop_price]
        return pos, stops
    return venue.call(snap)


def _guarded(store, pos: dict) -> bool:
    """A SPOT position may be protected by S4's own guard stop (``guard_stops``) instead of a venue order."""
    guard = store.get(C.GUARD_STOPS, pos.get("entry_intent_id", "")) if pos.get("market") == "SPOT" else None
    return bool(guard) and guard.get("state") == "ARMED"


def protection(venue, store, account: str = "main") -> Protection:
    positions, stops = _venue_book(venue, account)
    out = Protection(positions={s: str(a) for s, a in positions.items()})
    for symbol, amt in positions.items():
        close_side = "SELL" if amt > 0 else "BUY"
        covered = sum((q for _, s, side, q in stops if s == symbol and side == close_side), Decimal(0))
        if covered < abs(amt):
            out.uncovered.append(f"venue {symbol} {amt}: stops cover {covered}")
    open_stop_ids = {cid for cid, *_ in stops}
    for pos in store.query(C.POSITIONS, {"state": ("in", ["ACTIVE", "PENDING_CLOSING"])}):
        if pos.get("account_id", "main") != account:
            continue
        out.store_open += 1
        own = [d["client_order_id"] for d in store.query(C.ORDERS, {"pos_id": pos["_key"], "purpose": "STOP"})
               if d["client_order_id"] in open_stop_ids]
        if not own and not _guarded(store, pos):
            out.uncovered.append(f"store position {pos['_key']} ({pos['symbol']} {pos['side']} {pos['qty']}): "
                                 "no stop of its own open at the venue")
        out.extra_stops += max(0, len(own) - 1)
    return out


def cross_account(venue, store) -> list[str]:
    """Chimera's orders held at an account other than the one their leg names (the venue's books)."""
    held = venue.call(lambda: {o.client_id: o.account for o in venue.server.engine.orders.values()})
    out = []
    for leg in store.query(C.ORDERS, {}):
        at = held.get(leg["client_order_id"])
        if at is not None and at != leg.get("account_id", "main"):
            out.append(f"{leg['client_order_id']} ({leg['intent_id']}) is at {at}, its leg names "
                       f"{leg.get('account_id', 'main')}")
    return out


def quantity_mismatches(venue, store, account: str) -> list[str]:
    """Per symbol and side: the account's open store positions vs its position at the venue."""
    positions, _ = _venue_book(venue, account)
    venue_qty = {(s, "BUY" if a > 0 else "SELL"): abs(a) for s, a in positions.items()}
    store_qty: dict[tuple[str, str], Decimal] = {}
    for pos in store.query(C.POSITIONS, {"state": ("in", ["ACTIVE", "PENDING_CLOSING"])}):
        if pos.get("account_id", "main") == account and pos.get("market", "FUT") == "FUT":
            k = (pos["symbol"], pos["side"])
            store_qty[k] = store_qty.get(k, Decimal(0)) + Decimal(str(pos["qty"]))
    return [f"{account} {s} {side}: store {store_qty.get((s, side), 0)}, venue {venue_qty.get((s, side), 0)}"
            for s, side in sorted(set(venue_qty) | set(store_qty))
            if store_qty.get((s, side), Decimal(0)) != venue_qty.get((s, side), Decimal(0))]


def virtual_gaps(venue, store, account: str) -> list[str]:
    """The virtual-position invariant (docs/accounts.md): per symbol and side, the sum of the account's
    virtual positions (strategies and UNASSIGNED) equals its position at the venue."""
    from chimera.accounts.views import gaps

    positions, _ = _venue_book(venue, account)
    rows = [{"symbol": s, "positionSide": "BOTH", "positionAmt": str(a)} for s, a in positions.items()]
    return [f"{account} {sym} {side}: virtual {v}, venue {q}" for (sym, side), (v, q) in gaps(store, account, rows).items()]


def books(settings, store, account: str) -> list[dict]:
    """The books' identity rows of one account, as ``chimera books`` reads them; an unreadable venue is a row
    that fails (the drill reports it, it does not crash on it)."""
    try:
        return live_books(settings, store, account)
    except FatalError as exc:
        return [{"id": "books_read", "check": "the venue's books can be read", "expected": "readable",
                 "actual": str(exc), "ok": False}]


def trade_trail(r, venue, store, account: str) -> list[str]:
    """Where each of the account's futures trades stopped on its way to the books, one line per trade that
    did not reach both: the venue's trade → S1's report on ``venue:{reports}`` (and its seen-window mark)
    → S4's ``fills`` document → S6's position (``booked_trades``). Printed when the books fail, so a rare
    failure names its path: no report with a seen mark = the report was lost after S1 published it; no
    report, no mark = S1 never published it; a report but not booked = S6 skipped it (or dead-lettered it:
    the letter's group and reason are added)."""
    trades = venue.call(lambda: [t for t in venue.server.engine.trades
                                 if t.account == account and t.market == FUTURES])
    orders = venue.call(lambda: {o.order_id: o.client_id for o in venue.server.engine.orders.values()})
    reported: set[str] = set()
    for _id, fields in r.xrange(keys.VENUE_REPORTS):
        env = decode(fields)
        if (env.account_id or "main") == account and getattr(env.payload, "trade_id", None):
            reported.add(f"{env.payload.symbol}:{env.payload.trade_id}")
    dead: dict[str, str] = {}  # trade key -> who dead-lettered its report and why
    for _id, fields in (r.xrange(keys.DEAD_LETTER) if r.exists(keys.DEAD_LETTER) else []):
        letter = decode(fields).payload
        if letter.stream != keys.VENUE_REPORTS:
            continue
        rep = decode(letter.fields).payload
        if getattr(rep, "trade_id", None):
            dead[f"{rep.symbol}:{rep.trade_id}"] = f"{letter.group}: {letter.reason[:160]}"
    seen = {m.decode() if isinstance(m, bytes) else m for m in r.zrange(keys.s1_seen_window(account), 0, -1)}
    booked = {k for p in store.query(C.POSITIONS, {}) if p.get("account_id", "main") == account
              for k in p.get("booked_trades") or ()}
    prefix = "" if account == "main" else f"{account}:"
    out = []
    for t in trades:
        key = f"{t.symbol}:{t.trade_id}"
        has_fill = store.get(C.FILLS, f"{prefix}FUT:{key}") is not None
        if has_fill and key in booked:
            continue
        mark = seen_member("FUT", t.symbol, trade_member(t.order_id, t.trade_id)) in seen
        out.append(f"{account} trade {key} of {orders.get(t.order_id, '?')} at {t.time}: "
                   f"report {'on the stream' if key in reported else 'absent'}, seen mark {'yes' if mark else 'no'}, "
                   f"fill {'yes' if has_fill else 'no'}, booked on a position {'yes' if key in booked else 'no'}"
                   + (f", dead-lettered by {dead[key]}" if key in dead else ""))
    return out
