"""S5 reconciler: compare the venue (truth) with the store, both ways, and repair (spec 001 §S5).

Per account (a ``Reconcile`` command carries its ``account_id`` in the envelope; default main):

* orders — store open legs vs the venue's open orders + open algo orders, by client order id:
  - open in the store, not open at the venue: query it by client id; a final venue status is
    adopted (FILLED, CANCELED...); not found at all -> CANCELED with ``reconcile=CLOSED_NOT_AT_VENUE``;
  - open at the venue, unknown to the store: a Chimera-derived client id (``c<leg>-<hex>``) is
    adopted (orders doc + ``RECONCILE_ADOPTED``); a foreign one is recorded under a recon intent and
    canceled through S4 (``CancelOrder`` on ``ord:{commands}``) with an ERROR alert.
* positions (USDT-M) — store ACTIVE/PENDING_CLOSING positions vs ``positionRisk``, by symbol+side:
  - in the store, flat at the venue: CLOSED (``reconcile=CLOSED_NOT_AT_VENUE``), budget released;
  - quantity differs: the venue's quantity is written to the store (``RECONCILE_QTY_FIXED``);
  - at the venue, unknown to the store: ours if the store has a filled entry leg for the symbol
    and side (a crash between fill and S6) -> adopted ACTIVE, and protected with a reduce-only
    STOP through S4 when no stop is open at the venue; otherwise policy ``close`` (default):
    reduce-only MARKET through S4 + ERROR alert (``alert_only`` just alerts).

The run's report ``{summary, fixed, adopted, closed, consistency}`` (consistency = Jaccard of the
two id sets) is written to ``strategy_events`` as ``RECONCILE_RUN:<run_id>`` and
``recon:{last_run_ts}`` is set. Spot balances are not reconciled yet (reported in the summary).
"""

from __future__ import annotations

import re
from decimal import Decimal

from chimera.handlers.router import legs
from chimera.handlers.strategy.state import state_for
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Alert, CancelOrder, OpsEvent, OrderIntent, Reconcile, SubmitOrder
from chimera.schemas.states import OrderStatus, PositionStatus
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import OrderNotFound, venue_from_settings
from chimera.workers.errors import PermanentError
from chimera.workers.handler import Context

ORDERS = legs.ORDERS
INTENTS = "order_intents"
POSITIONS = "positions"
EVENTS = "strategy_events"
OPEN = {OrderStatus.SUBMITTED, OrderStatus.UNKNOWN, OrderStatus.ACCEPTED, OrderStatus.TRIGGERED,
        OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL}
LIVE_POS = (PositionStatus.ACTIVE.value, PositionStatus.PENDING_CLOSING.value)
CHIMERA_CID = re.compile(r"^c[A-Za-z0-9]{1,8}-[0-9a-f]{8,}$")
S = OrderStatus


def is_chimera_cid(cid: str) -> bool:
    return bool(CHIMERA_CID.match(cid or ""))


def jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def _param(ctx: Context, name: str, default):
    nested = ctx.config.get("reconciler") or {}
    v = ctx.config.get(f"reconciler.{name}", nested.get(name, default) if isinstance(nested, dict) else default)
    return type(default)(v)


def _venue(ctx: Context, account_id: str):
    key = f"venue:{account_id}"
    v = ctx.services.get(key)
    if v is None:
        v = ctx.services.get("venue") if account_id == "main" else None
        v = v or venue_from_settings(ctx.settings, account_id)
        ctx.services[key] = v
    return v.fut


def _mine(doc: dict, account_id: str) -> bool:
    return doc.get("account_id", "main") == account_id


def _event(ctx: Context, kind: str, key: str, body: dict) -> None:
    ctx.store.upsert(EVENTS, f"{kind}:{key}", {"kind": kind, "ts": ctx.now_ms(), **body})


class Run:
    def __init__(self, ctx: Context, env: Envelope, account_id: str) -> None:
        self.ctx, self.env, self.account_id = ctx, env, account_id
        self.run_id = env.idempotency_key
        self.fixed: list[dict] = []
        self.adopted: list[dict] = []
        self.closed: list[dict] = []
        self.emits: list[Emit] = []
        self.sets: dict[str, tuple[set, set]] = {}

    def alert(self, code: str, message: str, **context: str) -> None:
        self.emits.append(Emit(keys.ALERTS, Alert(level="ERROR", code=code, message=message,
                                                  context={"account_id": self.account_id, **context}),
                               f"{self.run_id}:alert:{code}:{context.get('ref', '')}"))

    # --- orders ---------------------------------------------------------------------------------

    def orders(self, fut) -> None:
        ctx = self.ctx
        store_open = {d["client_order_id"]: d for d in ctx.store.query(ORDERS, {"market": "FUT"})
                      if S(d["status"]) in OPEN and _mine(d, self.account_id)}
        venue_open = {o.client_order_id: o for o in fut.open_orders() + fut.open_algo_orders()}
        self.sets["orders"] = (set(store_open), set(venue_open))
        for cid, doc in store_open.items():
            if cid in venue_open:
                vo = venue_open[cid]
                if vo.filled_qty and legs.dec(doc.get("filled_qty")) != vo.filled_qty:
                    legs.adopt(ctx.store, doc, vo, ctx.now_ms())
                    self._fixed("order", cid, "filled_qty", doc.get("filled_qty"), str(vo.filled_qty))
                continue
            try:
                vo = fut.query(doc["symbol"], cid, algo=bool(doc.get("algo")))
            except OrderNotFound:
                vo = None
            if vo is not None and vo.status not in ("NEW", "PARTIALLY_FILLED", "TRIGGERED"):
                new = legs.adopt(ctx.store, doc, vo, ctx.now_ms())
                self._fixed("order", cid, "status", doc["status"], new["status"])
                continue
            if vo is None:
                self._close_stale_order(doc)

    def _close_stale_order(self, doc: dict) -> None:
        key = legs.leg_key(doc["intent_id"], doc["leg"])
        patch = {"status": S.CANCELED.value, "reconcile": "CLOSED_NOT_AT_VENUE", "reason": "RECONCILED",
                 "updated_at": self.ctx.now_ms()}
        # A reconciler finding is a venue fact: no such order. Straight to CANCELED (compare-and-set).
        if not self.ctx.store.update_if(ORDERS, key, patch, {"status": doc["status"]}):
            raise PermanentError(f"order {key} changed during reconcile; rerun")
        item = {"type": "order", "ref": doc["client_order_id"], "intent_id": doc["intent_id"],
                "symbol": doc["symbol"], "was": doc["status"], "action": "CLOSED_NOT_AT_VENUE"}
        self.closed.append(item)
        _event(self.ctx, "RECONCILE_ORDER_CLOSED", f"{self.run_id}:{doc['client_order_id']}", item)

    def adopt_or_cancel_venue_orders(self, fut) -> None:
        store_ids, venue_ids = self.sets["orders"]
        venue_open = {o.client_order_id: o for o in fut.open_orders() + fut.open_algo_orders()}
        for cid in sorted(venue_ids - store_ids):
            vo = venue_open.get(cid)
            if vo is None or self.ctx.store.query(ORDERS, {"client_order_id": cid}):
                continue  # gone meanwhile, or known (closed in the store but still open: adopted below)
            ours = is_chimera_cid(cid)
            intent_id = f"recon:{self.account_id}:{cid}"
            intent = {"intent_id": intent_id, "market": "FUT", "symbol": vo.symbol, "side": vo.side,
                      "qty": str(vo.qty), "exec_policy": vo.type, "purpose": "STOP" if vo.algo else "ENTRY",
                      "reduce_only": vo.reduce_only, "phase": "WORKING", "adopted_by": "reconciler",
                      "account_id": self.account_id, "created_at": self.ctx.now_ms()}
            self.ctx.store.insert_if_absent(INTENTS, intent_id, intent)
            doc = {"intent_id": intent_id, "leg": "adopted", "client_order_id": cid, "market": "FUT",
                   "symbol": vo.symbol, "side": vo.side, "type": vo.type, "qty": str(vo.qty),
                   "price": str(vo.price) if vo.price else None,
                   "stop_price": str(vo.stop_price) if vo.stop_price else None, "tif": None,
                   "reduce_only": vo.reduce_only, "algo": vo.algo, "purpose": intent["purpose"], "pos_id": "",
                   "status": S.ACCEPTED.value, "venue_order_id": vo.venue_order_id,
                   "filled_qty": str(vo.filled_qty or 0), "avg_price": None, "reason": "adopted by reconciler",
                   "account_id": self.account_id, "created_at": self.ctx.now_ms(), "updated_at": self.ctx.now_ms()}
            self.ctx.store.insert_if_absent(ORDERS, legs.leg_key(intent_id, "adopted"), doc)
            item = {"type": "order", "ref": cid, "intent_id": intent_id, "symbol": vo.symbol}
            if ours:
                self.adopted.append(item)
                _event(self.ctx, "RECONCILE_ADOPTED", f"{self.run_id}:{cid}", {**item, "state": "ACTIVE"})
            else:
                self.closed.append({**item, "action": "CANCEL_FOREIGN"})
                _event(self.ctx, "RECONCILE_ORDER_CANCEL", f"{self.run_id}:{cid}", item)
                self.emits.append(Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=intent_id, symbol=vo.symbol,
                                                                      client_order_id=cid,
                                                                      reason="reconcile: unknown venue order"),
                                       f"{intent_id}:cancel", self.account_id))
                self.alert("RECONCILE_UNKNOWN_ORDER", f"unknown open order {cid} on {vo.symbol}: canceling",
                           ref=cid, symbol=vo.symbol)

    # --- positions ----------------------------------------------------------------------------

    def positions(self, fut) -> None:
        ctx = self.ctx
        venue = {}
        for p in fut.position_risk():
            amt = Decimal(str(p.get("positionAmt") or 0))
            if amt:
                venue[f"{p['symbol']}:{'BUY' if amt > 0 else 'SELL'}"] = (abs(amt), p)
        store = {}
        for doc in ctx.store.query(POSITIONS, {"state": ("in", list(LIVE_POS))}):
            if _mine(doc, self.account_id) and doc.get("market", "FUT") == "FUT":
                store.setdefault(f"{doc['symbol']}:{doc['side']}", []).append(doc)
        self.sets["positions"] = (set(store), set(venue))
        for k, docs in store.items():
            if k not in venue:
                for doc in docs:
                    self._close_position(doc)
                continue
            vqty = venue[k][0]
            total = sum(Decimal(d["qty"]) for d in docs)
            if total != vqty:
                # Venue is truth: the (last) position doc absorbs the difference.
                doc = docs[-1]
                new = Decimal(doc["qty"]) + (vqty - total)
                if ctx.store.update_if(POSITIONS, doc["_key"], {"qty": str(new), "updated_at": ctx.now_ms()},
                                       {"state": doc["state"]}):
                    self._fixed("position", doc["_key"], "qty", doc["qty"], str(new))
        for k in sorted(set(venue) - set(store)):
            self._unknown_position(fut, k, *venue[k])

    def _close_position(self, doc: dict) -> None:
        ctx = self.ctx
        patch = {"state": PositionStatus.CLOSED.value, "qty": "0", "reconcile": "CLOSED_NOT_AT_VENUE",
                 "closed_at": ctx.now_ms(), "updated_at": ctx.now_ms()}
        if not ctx.store.update_if(POSITIONS, doc["_key"], patch, {"state": doc["state"]}):
            raise PermanentError(f"position {doc['_key']} changed during reconcile; rerun")
        try:
            state_for(ctx).release(doc["_key"], doc["symbol"])
        except Exception:  # noqa: BLE001 - a position opened outside the budget has nothing to release
            pass
        if ctx.redis is not None:
            ctx.redis.srem(keys.POS_ACTIVE, doc["_key"])
        item = {"type": "position", "ref": doc["_key"], "symbol": doc["symbol"], "side": doc["side"],
                "action": "CLOSED_NOT_AT_VENUE"}
        self.closed.append(item)
        _event(ctx, "RECONCILE_POSITION_CLOSED", f"{self.run_id}:{doc['_key']}", item)

    def _unknown_position(self, fut, k: str, qty: Decimal, raw: dict) -> None:
        ctx = self.ctx
        symbol, side = k.split(":")
        close_side = "SELL" if side == "BUY" else "BUY"
        entry = Decimal(str(raw.get("entryPrice") or 0))
        legs_ = [d for d in ctx.store.query(ORDERS, {"symbol": symbol, "side": side, "market": "FUT"})
                 if d.get("purpose", "ENTRY") in ("ENTRY", "ADD") and legs.dec(d.get("filled_qty"))
                 and _mine(d, self.account_id)]
        if legs_:
            src = max(legs_, key=lambda d: d.get("updated_at", 0))
            pos_id = src.get("pos_id") or src["intent_id"]
            sl_pct = Decimal(str(_param(ctx, "adopt_sl_pct", 0.02)))
            sl = (entry * (1 - sl_pct) if side == "BUY" else entry * (1 + sl_pct)) if entry else None
            ctx.store.upsert(POSITIONS, pos_id, {
                "symbol": symbol, "side": side, "qty": str(qty), "entry_price": str(entry) if entry else None,
                "state": PositionStatus.ACTIVE.value, "entry_intent_id": src["intent_id"], "sl_level": 1,
                "sl_price": str(sl) if sl else None, "adopted_by": "reconciler", "account_id": self.account_id,
                "created_at": ctx.now_ms(), "updated_at": ctx.now_ms()})
            item = {"type": "position", "ref": pos_id, "symbol": symbol, "side": side, "qty": str(qty)}
            self.adopted.append(item)
            _event(ctx, "RECONCILE_ADOPTED", f"{self.run_id}:{pos_id}", {**item, "state": "ACTIVE"})
            has_stop = any(o.reduce_only and o.side == close_side for o in fut.open_algo_orders(symbol))
            if not has_stop and sl is not None:
                f = fut.filters(symbol)
                intent = OrderIntent(intent_id=f"{pos_id}:recon-sl", market="FUT", symbol=symbol, side=close_side,
                                     qty=qty, exec_policy="STOP", purpose="STOP",
                                     stop_price=f.price(sl), reduce_only=True, pos_id=pos_id)
                self.emits.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent.intent_id,
                                       self.account_id))
            return
        policy = _param(ctx, "unknown_position_policy", "close")
        item = {"type": "position", "ref": k, "symbol": symbol, "side": side, "qty": str(qty), "policy": policy}
        _event(ctx, "RECONCILE_UNKNOWN_POSITION", f"{self.run_id}:{k}", item)
        if policy == "close":
            intent_id = f"recon-close-{self.run_id}-{symbol}-{side}"[:64]
            intent = OrderIntent(intent_id=intent_id, market="FUT", symbol=symbol, side=close_side, qty=qty,
                                 exec_policy="MARKET", purpose="FLATTEN", reduce_only=True)
            self.emits.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent_id, self.account_id))
            self.closed.append({**item, "action": "CLOSE_UNKNOWN", "intent_id": intent_id})
        self.alert("RECONCILE_UNKNOWN_POSITION",
                   f"unknown {side} position {qty} {symbol} at the venue: policy {policy}", ref=k, symbol=symbol)

    def _fixed(self, type_: str, ref: str, field: str, was, now) -> None:
        item = {"type": type_, "ref": ref, "field": field, "was": str(was), "now": str(now)}
        self.fixed.append(item)
        _event(self.ctx, "RECONCILE_QTY_FIXED" if field == "qty" else "RECONCILE_FIXED", f"{self.run_id}:{ref}", item)

    def report(self, scope: str) -> dict:
        a = set().union(*(s for s, _ in self.sets.values())) if self.sets else set()
        b = set().union(*(v for _, v in self.sets.values())) if self.sets else set()
        consistency = {name: round(jaccard(s, v), 6) for name, (s, v) in self.sets.items()}
        consistency["all"] = round(jaccard(a, b), 6)
        summary = {"scope": scope, "account_id": self.account_id,
                   **{f"{n}_store": len(s) for n, (s, _) in self.sets.items()},
                   **{f"{n}_venue": len(v) for n, (_, v) in self.sets.items()},
                   "fixed": len(self.fixed), "adopted": len(self.adopted), "closed": len(self.closed),
                   "not_reconciled": "SPOT balances and orders (not built yet)"}
        return {"run_id": self.run_id, "summary": summary, "fixed": self.fixed, "adopted": self.adopted,
                "closed": self.closed, "consistency": consistency, "finished_at": self.ctx.now_ms()}


def handle(env: Envelope, ctx: Context) -> list[Emit]:
    cmd = env.payload
    if not isinstance(cmd, Reconcile):
        raise PermanentError(f"reconciler does not handle {type(cmd).__name__}")
    run = Run(ctx, env, env.account_id or "main")
    fut = _venue(ctx, run.account_id)
    if cmd.scope in ("ALL", "ORDERS"):
        run.orders(fut)
        run.adopt_or_cancel_venue_orders(fut)
    if cmd.scope in ("ALL", "POSITIONS"):
        run.positions(fut)
    report = run.report(cmd.scope)
    ctx.store.upsert(EVENTS, f"RECONCILE_RUN:{run.run_id}", {"kind": "RECONCILE_RUN", "ts": ctx.now_ms(), **report})
    if ctx.redis is not None:
        ctx.redis.set(keys.RECON_LAST_RUN, str(ctx.now_ms()))
    done = OpsEvent(kind="RECONCILE_DONE", actor=cmd.requested_by or "reconciler",
                    detail={"run_id": run.run_id, "account_id": run.account_id,
                            "consistency": str(report["consistency"]["all"]), "fixed": str(len(run.fixed)),
                            "adopted": str(len(run.adopted)), "closed": str(len(run.closed))})
    return [*run.emits, Emit(keys.OPS_EVENTS, done, f"{run.run_id}:done", run.account_id)]


__all__ = ["handle", "is_chimera_cid", "jaccard"]
