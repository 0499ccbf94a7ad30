"""S5 positions pass: USDT-M positions in the store vs ``positionRisk``, per symbol and side.

For each ``symbol:side``: V = the venue's quantity, L = the live store positions (ACTIVE /
PENDING_CLOSING in ``positions``), O = orphans — filled entry legs whose position S6 never opened
(no ``positions`` document, or one left in PENDING_ENTRY): a crash between the fill and S6.

1. A live position whose closing leg (stop, exit, flatten, TP) is FILLED is closed first: an
   exchange-side stop that fired while nobody listened, or S6 lagging behind.
2. A symbol with a leg in flight (or a resting limit order, which can fill any moment) is deferred:
   its quantities are moving, so no difference is counted and nothing is touched.
3. V == L: consistent.
4. Orphans that fit (L + O <= V) are adopted: ACTIVE in ``positions`` and in S3's lifecycle
   document, in ``pos:{active}``, and protected with S6's own stop intent ``<pos_id>:sl1`` (S4
   de-duplicates by intent id, so S6 replaying the lost result later adds no second stop).
5. What is left, the venue wins: a positive difference is added to the newest position, a negative
   one taken from the newest down (a position reduced to zero is closed).
6. Store positions but the venue is flat: if an unbooked force order (liquidation or ADL) closed that
   side, closed as LIQUIDATED / ADL at its average price with an ERROR alert (liquidations.py);
   otherwise closed as CLOSED_NOT_AT_VENUE. Either way S3's budget is released.
7. A venue position with nothing of ours: ``reconciler.unknown_position_policy`` ``close`` (default:
   reduce-only MARKET FLATTEN through S4) or ``alert_only``; both raise an ERROR alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from chimera.handlers.common import strategy_event
from chimera.handlers.positions import lifecycle as s6
from chimera.handlers.reconciler import liquidations
from chimera.handlers.reconciler.common import mine, read
from chimera.handlers.reconciler.periodic import param
from chimera.handlers.router import toolkit as legs
from chimera.handlers.strategy import lifecycle
from chimera.risk.state import state_for
from chimera.schemas.messages import OrderIntent, PositionEvent, SubmitOrder
from chimera.schemas.states import PositionEvent as PE
from chimera.schemas.states import PositionStatus
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import client_order_id

POSITIONS = "positions"
INTENTS = "order_intents"
P = PositionStatus
LIVE = (P.ACTIVE.value, P.PENDING_CLOSING.value)
ENTRY_PURPOSES = ["ENTRY", "ADD"]
CLOSING_PURPOSES = ["STOP", "EXIT", "FLATTEN", "TAKE_PROFIT", "REDUCE"]
QUIET_ALGO = {"ACCEPTED", "CANCELED", "REJECTED", "EXPIRED"}  # an armed or ended stop moves no position
ZERO = Decimal(0)


@dataclass
class Orphan:
    pos_id: str
    symbol: str
    side: str
    qty: Decimal
    avg: Decimal | None
    intent_id: str
    updated_at: int


def reconcile(run, fut) -> None:
    venue: dict[str, tuple[Decimal, dict]] = {}
    for p in read(fut.position_risk):
        amt = Decimal(str(p.get("positionAmt") or 0))
        if amt:
            venue[f"{p['symbol']}:{'BUY' if amt > 0 else 'SELL'}"] = (abs(amt), p)
    live = _live(run)
    _close_filled(run, live)
    live = _live(run)
    orphans = _orphans(run)
    busy = _busy_symbols(run)
    store_ids, venue_ids = set(), set()
    for k in sorted(set(venue) | set(live) | set(orphans)):
        symbol = k.split(":")[0]
        v_qty, raw = venue.get(k, (ZERO, {}))
        docs = live.get(k, [])
        l_qty = sum((Decimal(d["qty"]) for d in docs), ZERO)
        if symbol in busy:
            if v_qty != l_qty:
                run.deferred.append({"type": "position", "ref": k, "venue": str(v_qty), "store": str(l_qty)})
            continue
        if l_qty:
            store_ids.add(k)
        if v_qty:
            venue_ids.add(k)
        if v_qty == l_qty:
            continue
        fits = _fitting(orphans.get(k, []), v_qty - l_qty, take_one=not docs)
        if not docs and not fits:
            _unknown_position(run, k, v_qty)
            continue
        if not v_qty:
            if not liquidations.book_forced_close(run, fut, symbol, k.split(":")[1], docs, close):
                for doc in docs:
                    close(run, doc, "CLOSED_NOT_AT_VENUE")
            continue
        entry = Decimal(str(raw.get("entryPrice") or 0)) or None
        docs = docs + [d for d in (_adopt(run, fut, o, entry) for o in fits) if d]
        total = sum((Decimal(d["qty"]) for d in docs), ZERO)
        if total != v_qty:
            _absorb(run, docs, v_qty - total)
    run.sets["positions"] = (store_ids, venue_ids)


# --- reading -----------------------------------------------------------------------------------


def _live(run) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in run.ctx.store.query(POSITIONS, {"state": ("in", list(LIVE))}, order_by="created_at"):
        if mine(doc, run.account_id) and doc.get("market", "FUT") == "FUT":
            out.setdefault(f"{doc['symbol']}:{doc['side']}", []).append(doc)
    return out


def _lookback(run) -> int:
    return run.ctx.now_ms() - param(run.ctx, "lookback_ms", 7 * 24 * 3600 * 1000)


def _orphans(run) -> dict[str, list[Orphan]]:
    store = run.ctx.store
    by_pos: dict[str, list[dict]] = {}
    for d in store.query(legs.ORDERS, {"market": "FUT", "purpose": ("in", ENTRY_PURPOSES),
                                       "updated_at": (">=", _lookback(run))}):
        if mine(d, run.account_id) and legs.dec(d.get("filled_qty")):
            by_pos.setdefault(d.get("pos_id") or d["intent_id"], []).append(d)
    out: dict[str, list[Orphan]] = {}
    for pos_id, ls in by_pos.items():
        pos = store.get(POSITIONS, pos_id)
        if pos is not None and pos["state"] != P.PENDING_ENTRY.value:
            continue
        qty = sum((legs.dec(d["filled_qty"]) for d in ls), ZERO)
        notional = sum((legs.dec(d["filled_qty"]) * (legs.dec(d.get("avg_price")) or ZERO) for d in ls), ZERO)
        o = Orphan(pos_id, ls[0]["symbol"], ls[0]["side"], qty, (notional / qty) if notional else None,
                   ls[0]["intent_id"], max(int(d.get("updated_at") or 0) for d in ls))
        out.setdefault(f"{o.symbol}:{o.side}", []).append(o)
    return out


def _busy_symbols(run) -> set[str]:
    busy = {d["symbol"] for d in run.flight_legs() if not d.get("algo") or d["status"] not in QUIET_ALGO}
    for d in run.ctx.store.query(legs.ORDERS, {"market": "FUT", "status": ("in", ["ACCEPTED", "PARTIALLY_FILLED"])}):
        if not d.get("algo") and mine(d, run.account_id):
            busy.add(d["symbol"])  # a resting limit order can fill between our two reads
    return busy


def _fitting(orphans: list[Orphan], room: Decimal, take_one: bool) -> list[Orphan]:
    picked, used = [], ZERO
    for o in sorted(orphans, key=lambda o: o.updated_at):
        if used + o.qty <= room:
            picked.append(o)
            used += o.qty
    if not picked and take_one and orphans:
        picked = [max(orphans, key=lambda o: o.updated_at)]  # ours for sure; its quantity is fixed next
    return picked


# --- repairs -----------------------------------------------------------------------------------


def _close_filled(run, live: dict[str, list[dict]]) -> None:
    by_pos = {d["_key"]: d for docs in live.values() for d in docs}
    if not by_pos:
        return
    done = run.ctx.store.query(legs.ORDERS, {"market": "FUT", "status": "FILLED",
                                             "purpose": ("in", CLOSING_PURPOSES), "updated_at": (">=", _lookback(run))})
    flight = {d["client_order_id"] for d in run.flight_legs()}
    for leg in done:
        doc = by_pos.get(leg.get("pos_id") or "")
        # A partial reduce (a TP ladder step) is not a close; the quantity check below handles it.
        if doc is None or leg["client_order_id"] in flight or not mine(leg, run.account_id) \
                or legs.dec(leg["filled_qty"]) < Decimal(doc["qty"]):
            continue
        del by_pos[doc["_key"]]
        close(run, doc, "CLOSED_BY_FILL", exit_leg=leg)


def close(run, doc: dict, action: str, exit_leg: dict | None = None, exit_price: str | None = None) -> bool:
    ctx = run.ctx
    patch = {"state": P.CLOSED.value, "qty": "0", "reconcile": action, "closed_at": ctx.now_ms(),
             "updated_at": ctx.now_ms()}
    if exit_leg:
        patch.update(exit_price=exit_leg.get("avg_price"), exit_intent_id=exit_leg["intent_id"])
    if exit_price is not None:
        patch["exit_price"] = exit_price
    if not ctx.store.update_if(POSITIONS, doc["_key"], patch, {"state": doc["state"]}):
        fresh = ctx.store.get(POSITIONS, doc["_key"]) or {}
        if fresh.get("state") != P.CLOSED.value:  # closed by S6 meanwhile is no difference
            run.unresolved.append({"type": "position", "ref": doc["_key"], "why": "changed during reconcile"})
        return False
    reason = "STOP_LOSS" if exit_leg and exit_leg.get("purpose") == "STOP" else \
        action if action in ("LIQUIDATED", "ADL") else "RECONCILED"
    s3 = ctx.store.get(lifecycle.COLL, doc["_key"])
    if s3 and s3.get("kind") == "POSITION" and s3.get("state") in LIVE:
        run.emits += lifecycle.close_position(ctx.store, state_for(ctx), doc["_key"], now_ms=ctx.now_ms(),
                                              reason=reason).emits
    s6.release_budget(ctx, doc)
    s6.deactivate(ctx, doc)
    item = {"type": "position", "ref": doc["_key"], "symbol": doc["symbol"], "side": doc["side"], "action": action}
    run.closed.append(item)
    strategy_event(ctx, "RECONCILE_POSITION_CLOSED", f"{run.run_id}:{doc['_key']}", item)
    return True


def _absorb(run, docs: list[dict], diff: Decimal) -> None:
    """The venue's quantity wins: add to the newest position, or take from the newest down."""
    ctx = run.ctx
    for doc in reversed(docs):
        if not diff:
            return
        qty = Decimal(doc["qty"])
        new = qty + diff if diff > 0 else max(ZERO, qty + diff)
        diff -= new - qty
        if not new:
            close(run, doc, "QTY_TO_ZERO")
            continue
        if ctx.store.update_if(POSITIONS, doc["_key"], {"qty": str(new), "updated_at": ctx.now_ms()},
                               {"state": doc["state"], "qty": doc["qty"]}):
            run.fixed_item("position", doc["_key"], "qty", doc["qty"], str(new))
        else:
            run.unresolved.append({"type": "position", "ref": doc["_key"], "why": "changed during reconcile"})


def _stop_price(run, o: Orphan, entry: Decimal | None) -> Decimal | None:
    intent = run.ctx.store.get(INTENTS, o.intent_id) or {}
    if intent.get("sl_price"):
        return Decimal(str(intent["sl_price"]))
    if not entry:
        return None
    pct = Decimal(str(param(run.ctx, "adopt_sl_pct", 0.02)))
    return entry * (1 - pct) if o.side == "BUY" else entry * (1 + pct)


def _adopt(run, fut, o: Orphan, venue_entry: Decimal | None) -> dict | None:
    ctx = run.ctx
    now = ctx.now_ms()
    entry = o.avg or venue_entry
    sl = _stop_price(run, o, entry)
    sl_intent = f"{o.pos_id}:sl1"  # S6's own stop intent: S4 places it once whoever asks first
    intent = ctx.store.get(INTENTS, o.intent_id) or {}
    doc = {"symbol": o.symbol, "side": o.side, "state": P.ACTIVE.value, "entry_intent_id": o.intent_id,
           "sl_level": 1, "adopted_by": "reconciler", "account_id": run.account_id, "fills_out": {},
           **s6.opening_fields(o.intent_id, intent, o.qty, entry or None, o.qty * entry if entry else Decimal("0"),
                               sl or None),
           "updated_at": now}
    if not ctx.store.insert_if_absent(POSITIONS, o.pos_id, {**doc, "created_at": now}) and \
            not ctx.store.update_if(POSITIONS, o.pos_id, doc, {"state": P.PENDING_ENTRY.value}):
        run.unresolved.append({"type": "position", "ref": o.pos_id, "why": "opened by S6 during reconcile"})
        return None
    s3 = ctx.store.get(lifecycle.COLL, o.pos_id)
    if s3 and s3.get("kind") == "POSITION" and s3.get("state") == P.PENDING_ENTRY.value:
        run.emits += lifecycle.transition(ctx.store, state_for(ctx), o.pos_id, PE.POSITION_ADOPTED, now_ms=now,
                                          reason="adopted by reconciler", cause=run.run_id,
                                          patch={"filled_qty": str(o.qty),
                                                 "entry_price": str(entry) if entry else None}).emits
    s6.activate(ctx, {**doc, "_key": o.pos_id})  # S6 manages it from here; its stop state is S6's own business
    item = {"type": "position", "ref": o.pos_id, "symbol": o.symbol, "side": o.side, "qty": str(o.qty)}
    run.adopted.append(item)
    strategy_event(ctx, "RECONCILE_ADOPTED", f"{run.run_id}:{o.pos_id}", {**item, "state": "ACTIVE"})
    run.emits.append(Emit(keys.POS_EVENTS, PositionEvent(
        pos_id=o.pos_id, kind="ADOPTED", symbol=o.symbol, side=o.side, qty=o.qty, state=P.ACTIVE.value,
        entry_price=entry, sl_price=sl, intent_id=o.intent_id), f"pos:{o.pos_id}:ADOPTED:{run.run_id}", run.account_id))
    armed = {a.client_order_id for a in read(fut.open_algo_orders, o.symbol)}
    if sl is not None and client_order_id(sl_intent, "sl") not in armed:
        stop = OrderIntent(intent_id=sl_intent, market="FUT", symbol=o.symbol, side="SELL" if o.side == "BUY" else "BUY",
                           qty=o.qty, exec_policy="STOP", purpose="STOP", stop_price=fut.filters(o.symbol).price(sl),
                           reduce_only=True, pos_id=o.pos_id, parent_intent_id=o.intent_id)
        run.emits.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=stop), sl_intent, run.account_id))
    return {**doc, "_key": o.pos_id}


def _unknown_position(run, k: str, qty: Decimal) -> None:
    symbol, side = k.split(":")
    policy = param(run.ctx, "unknown_position_policy", "close")
    item = {"type": "position", "ref": k, "symbol": symbol, "side": side, "qty": str(qty), "policy": policy}
    strategy_event(run.ctx, "RECONCILE_UNKNOWN_POSITION", f"{run.run_id}:{k}", item)
    if policy == "close":
        intent_id = f"recon-close-{run.run_id}-{symbol}-{side}"[:64]
        intent = OrderIntent(intent_id=intent_id, market="FUT", symbol=symbol, side="SELL" if side == "BUY" else "BUY",
                             qty=qty, exec_policy="MARKET", purpose="FLATTEN", reduce_only=True)
        run.emits.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent_id, run.account_id))
        run.closed.append({**item, "action": "CLOSE_UNKNOWN", "intent_id": intent_id})
    else:
        run.unresolved.append({**item, "why": "unknown position left open (alert_only)"})
    run.alert("RECONCILE_UNKNOWN_POSITION",
              f"unknown {side} position {qty} {symbol} at the venue: policy {policy}", ref=k, symbol=symbol)
