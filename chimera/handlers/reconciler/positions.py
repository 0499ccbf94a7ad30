"""S5 positions pass: USDT-M positions in the store vs ``positionRisk``, per symbol and side.

For each ``symbol:side``: V = the venue's quantity, L = the live store positions (ACTIVE /
PENDING_CLOSING in ``positions``), O = orphans — filled entry legs whose position S6 never opened
(no ``positions`` document, or one left in PENDING_ENTRY): a crash between the fill and S6.

1. A live position whose closing leg (stop, exit, flatten, TP) is FILLED is closed first: an
   exchange-side stop that fired while nobody listened, or S6 lagging behind.
2. A symbol with a leg in flight (or a resting limit order, which can fill any moment) is deferred:
   its quantities are moving, so no difference is counted and nothing is touched. So is a difference
   while S6 has results or venue reports not handled yet (its group's backlog): the fills it is about
   to book are no orphans (a stalled S6, e.g. during a Redis failover, would otherwise see its
   positions adopted by S5 and trading degraded). Likewise an orphan younger than ``stuck_ms`` while S4
   has commands or timers pending: S4 killed between writing the filled leg and publishing its result
   publishes it when the command is redelivered.
3. V == L: consistent.
4. Orphans that fit (L + O <= V) are adopted through S6 (``positions.lifecycle.adopt``): ACTIVE in
   ``positions`` and protected with S6's own stop intent ``<pos_id>:sl1`` (S4 de-duplicates by
   intent id, so S6 replaying the lost result later adds no second stop).
5. What is left, the venue wins: a positive difference is added to the newest position, a negative
   one taken from the newest down (a position reduced to zero is closed).
6. Store positions but the venue is flat: if an unbooked force order (liquidation or ADL) closed that
   side, closed as LIQUIDATED / ADL at its average price with an ERROR alert (liquidations.py);
   otherwise closed as CLOSED_NOT_AT_VENUE. Either way S3's budget is released.

Every write to ``positions`` goes through S6's lifecycle functions (compare-and-set on the version):
S5 never patches a position document itself, and nothing else holds a position's state.
7. A venue position with nothing of ours: ``reconciler.unknown_position_policy`` ``close`` (default:
   reduce-only MARKET FLATTEN through S4) or ``alert_only``; both raise an ERROR alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from chimera.handlers.common import dec, strategy_event
from chimera.handlers.positions import lifecycle as s6
from chimera.handlers.reconciler import liquidations
from chimera.handlers.reconciler.common import mine, read
from chimera.handlers.reconciler.periodic import param
from chimera.schemas.documents.positions import Position, from_doc
from chimera.schemas.messages import OrderIntent, SubmitOrder
from chimera.schemas.states import PositionStatus
from chimera.store.collections import ORDER_INTENTS, ORDERS, POSITIONS
from chimera.streams import keys
from chimera.streams.producer import Emit

INTENTS = ORDER_INTENTS
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
    # The order of the reads is what makes a difference real. S4 writes a leg, then publishes its
    # result; S6 applies the result, then acks it. So: first S6's backlog, then the venue, then the
    # store, with every leg written since this pass started in flight. A result published before the
    # backlog check is applied by then; one published after belongs to a leg in flight below.
    as_of = run.ctx.now_ms()
    # S6 has results or reports to apply: the store's positions are about to move.
    s6_behind = _behind(run, "s6", (keys.ORD_RESULTS, keys.VENUE_REPORTS))
    # S4 has commands or timers to finish: a result may still come out of them.
    s4_busy = _behind(run, "s4", (keys.ORD_COMMANDS, keys.ROUTER_TIMERS))
    venue: dict[str, tuple[Decimal, dict]] = {}
    for p in read(fut.position_risk):
        amt = Decimal(str(p.get("positionAmt") or 0))
        if amt:
            venue[f"{p['symbol']}:{'BUY' if amt > 0 else 'SELL'}"] = (abs(amt), p)
    run.flight_legs(as_of)
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
        l_qty = sum((d.qty for d in docs), ZERO)
        # S4 still holding commands: a young orphan's result may be one of them (S4 killed between writing the
        # filled leg and publishing its result, redelivered on restart). Past ``stuck_ms`` it is adopted anyway.
        s4_pending = s4_busy and any(o.updated_at > as_of - run.stuck_ms for o in orphans.get(k, []))
        if symbol in busy or (v_qty != l_qty and (s4_pending or (s6_behind and (docs or orphans.get(k))))):
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
        total = sum((d.qty for d in docs), ZERO)
        if total != v_qty:
            _absorb(run, docs, v_qty - total)
    run.sets["positions"] = (store_ids, venue_ids)


# --- reading -----------------------------------------------------------------------------------


def _behind(run, role: str, streams: tuple[str, ...]) -> bool:
    """``role``'s group has entries on ``streams`` it has not finished (pending or not yet read)."""
    port = run.ctx.health_inputs
    return any(port.group_backlog(stream, keys.group(role)) > 0 for stream in streams)


def _live(run) -> dict[str, list[Position]]:
    out: dict[str, list[Position]] = {}
    for doc in run.ctx.store.query(POSITIONS, {"state": ("in", list(LIVE))}, order_by="created_at"):
        pos = from_doc(doc)
        if mine(doc, run.account_id) and pos.market == "FUT":
            out.setdefault(f"{pos.symbol}:{pos.side}", []).append(pos)
    return out


def _lookback(run) -> int:
    return run.ctx.now_ms() - param(run.ctx, "lookback_ms", 7 * 24 * 3600 * 1000)


def _orphans(run) -> dict[str, list[Orphan]]:
    store = run.ctx.store
    by_pos: dict[str, list[dict]] = {}
    for d in store.query(ORDERS, {"market": "FUT", "purpose": ("in", ENTRY_PURPOSES),
                                       "updated_at": (">=", _lookback(run))}):
        if mine(d, run.account_id) and dec(d.get("filled_qty")):
            by_pos.setdefault(d.get("pos_id") or d["intent_id"], []).append(d)
    out: dict[str, list[Orphan]] = {}
    for pos_id, ls in by_pos.items():
        pos = store.get(POSITIONS, pos_id)
        if pos is not None and pos["state"] != P.PENDING_ENTRY.value:
            continue
        qty = sum((dec(d["filled_qty"]) for d in ls), ZERO)
        notional = sum((dec(d["filled_qty"]) * (dec(d.get("avg_price")) or ZERO) for d in ls), ZERO)
        o = Orphan(pos_id, ls[0]["symbol"], ls[0]["side"], qty, (notional / qty) if notional else None,
                   ls[0]["intent_id"], max(int(d.get("updated_at") or 0) for d in ls))
        out.setdefault(f"{o.symbol}:{o.side}", []).append(o)
    return out


def _busy_symbols(run) -> set[str]:
    busy = {d["symbol"] for d in run.flight_legs() if not d.get("algo") or d["status"] not in QUIET_ALGO}
    for d in run.ctx.store.query(ORDERS, {"market": "FUT", "status": ("in", ["ACCEPTED", "PARTIALLY_FILLED"])}):
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


# --- repairs (through S6's lifecycle) --------------------------------------------------------------


def _close_filled(run, live: dict[str, list[Position]]) -> None:
    by_pos = {p.pos_id: p for docs in live.values() for p in docs}
    if not by_pos:
        return
    done = run.ctx.store.query(ORDERS, {"market": "FUT", "status": "FILLED",
                                             "purpose": ("in", CLOSING_PURPOSES), "updated_at": (">=", _lookback(run))})
    flight = {d["client_order_id"] for d in run.flight_legs()}
    for leg in done:
        pos = by_pos.get(leg.get("pos_id") or "")
        # A partial reduce (a TP ladder step) is not a close; the quantity check below handles it.
        if pos is None or leg["client_order_id"] in flight or not mine(leg, run.account_id) \
                or dec(leg["filled_qty"]) < pos.qty:
            continue
        del by_pos[pos.pos_id]
        close(run, pos, "CLOSED_BY_FILL", exit_leg=leg)


def close(run, pos: Position, action: str, exit_leg: dict | None = None, exit_price: str | None = None,
          realized_pnl: Decimal | None = None, fee: Decimal = ZERO) -> bool:
    reason = "STOP_LOSS" if exit_leg and exit_leg.get("purpose") == "STOP" else \
        action if action in ("LIQUIDATED", "ADL") else "RECONCILED"
    price = dec(exit_leg.get("avg_price")) if exit_leg else None
    if exit_price is not None:
        price = Decimal(str(exit_price))
    closed, emits = s6.close_reconciled(run.ctx, pos, action, exit_price=price, reason=reason,
                                        exit_intent_id=exit_leg["intent_id"] if exit_leg else "",
                                        realized_pnl=realized_pnl, fee=fee)
    if closed is None:
        fresh = run.ctx.store.get(POSITIONS, pos.pos_id) or {}
        if fresh.get("state") != P.CLOSED.value:  # closed by S6 meanwhile is no difference
            run.unresolved.append({"type": "position", "ref": pos.pos_id, "why": "changed during reconcile"})
        return False
    run.emits += emits
    item = {"type": "position", "ref": pos.pos_id, "symbol": pos.symbol, "side": pos.side, "action": action}
    run.closed.append(item)
    strategy_event(run.ctx, "RECONCILE_POSITION_CLOSED", f"{run.run_id}:{pos.pos_id}", item)
    return True


def _absorb(run, docs: list[Position], diff: Decimal) -> None:
    """The venue's quantity wins: add to the newest position, or take from the newest down."""
    for pos in reversed(docs):
        if not diff:
            return
        new = pos.qty + diff if diff > 0 else max(ZERO, pos.qty + diff)
        diff -= new - pos.qty
        if not new:
            close(run, pos, "QTY_TO_ZERO")
            continue
        if s6.set_qty(run.ctx, pos, new) is not None:
            run.fixed_item("position", pos.pos_id, "qty", str(pos.qty), str(new))
        else:
            run.unresolved.append({"type": "position", "ref": pos.pos_id, "why": "changed during reconcile"})


def _stop_price(run, o: Orphan, entry: Decimal | None) -> Decimal | None:
    intent = run.ctx.store.get(INTENTS, o.intent_id) or {}
    if intent.get("sl_price"):
        return Decimal(str(intent["sl_price"]))
    if not entry:
        return None
    pct = Decimal(str(param(run.ctx, "adopt_sl_pct", 0.02)))
    return entry * (1 - pct) if o.side == "BUY" else entry * (1 + pct)


def _adopt(run, fut, o: Orphan, venue_entry: Decimal | None) -> Position | None:
    entry = o.avg or venue_entry
    sl = _stop_price(run, o, entry)
    if sl is not None:
        sl = fut.filters(o.symbol).price(sl)
    intent = run.ctx.store.get(INTENTS, o.intent_id) or {}
    pos, emits = s6.adopt(run.ctx, o.pos_id, symbol=o.symbol, side=o.side, qty=o.qty, entry=entry or None,
                          intent_id=o.intent_id, intent=intent, sl_price=sl, account_id=run.account_id)
    if pos is None:
        run.unresolved.append({"type": "position", "ref": o.pos_id, "why": "opened by S6 during reconcile"})
        return None
    run.emits += emits
    item = {"type": "position", "ref": o.pos_id, "symbol": o.symbol, "side": o.side, "qty": str(o.qty)}
    run.adopted.append(item)
    strategy_event(run.ctx, "RECONCILE_ADOPTED", f"{run.run_id}:{o.pos_id}", {**item, "state": "ACTIVE"})
    return pos


def _unknown_position(run, k: str, qty: Decimal) -> None:
    symbol, side = k.split(":")
    policy = param(run.ctx, "unknown_position_policy", "close")
    item = {"type": "position", "ref": k, "symbol": symbol, "side": side, "qty": str(qty), "policy": policy}
    strategy_event(run.ctx, "RECONCILE_UNKNOWN_POSITION", f"{run.run_id}:{k}", item)
    if policy == "close":
        intent_id = f"recon-close-{run.run_id}-{symbol}-{side}"[:64]
        intent = OrderIntent(intent_id=intent_id, market="FUT", symbol=symbol, side="SELL" if side == "BUY" else "BUY",
                             qty=qty, exec_policy="MARKET", purpose="FLATTEN", reduce_only=True,
                             account_id=run.account_id)  # S4 executes it on the reconciled account only
        run.emits.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent_id, run.account_id))
        run.closed.append({**item, "action": "CLOSE_UNKNOWN", "intent_id": intent_id})
    else:
        run.unresolved.append({**item, "why": "unknown position left open (alert_only)"})
    run.alert("RECONCILE_UNKNOWN_POSITION",
              f"unknown {side} position {qty} {symbol} at the venue: policy {policy}", ref=k, symbol=symbol)
