"""S5 reconciler: compare the venue (truth) with the store, both ways, and repair (spec 001 §S5, seq. 004 §3).

Per account (a ``Reconcile`` command carries its ``account_id`` in the envelope; default main):

* in flight is not a difference: a leg S4 is still resolving (SUBMITTED / UNKNOWN / PENDING_CANCEL,
  younger than ``reconciler.stuck_ms``, 60 s) or any leg or position changed in the last
  ``reconciler.settle_ms`` (3 s, results S3/S6 may not have applied yet) is left alone and reported
  under ``deferred``; a symbol with such a leg (or a resting limit order) defers its positions too;
* orders — settled open legs vs the venue's open + open algo orders, by client order id
  (this module); positions — ``positions.py``.

The report ``{summary, fixed, adopted, closed, unresolved, deferred, consistency, consistent}``
(consistency = Jaccard of the settled id sets, ``finished_at``) is appended to the ``strategy_events``
audit log as ``RECONCILE_RUN:<run_id>``. ``consistent`` is false when the
run found any difference; then trading is degraded to REDUCE_ONLY until a consistent run
(``degrade.py``, through the risk port). Runs start at worker start-up, every
``reconciler.interval_ms`` (a timer S5 returns) and on demand (``periodic.py``). Spot orders (OCO lists included) and balances: ``spot.py``.
"""

from __future__ import annotations

import re

from chimera.accounts import views as virtual_views
from chimera.errors import PermanentError, RetryableError
from chimera.handlers.common import dec, strategy_event, venue
from chimera.handlers.positions.common import risk
from chimera.handlers.reconciler import degrade, periodic
from chimera.handlers.reconciler import positions as pos_pass
from chimera.handlers.reconciler import spot as spot_pass
from chimera.handlers.reconciler.common import in_flight, mine, read
from chimera.handlers.router import toolkit as legs
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Alert, CancelOrder, OpsEvent, Reconcile
from chimera.schemas.states import OrderStatus
from chimera.store.collections import ORDER_INTENTS as INTENTS
from chimera.store.collections import ORDERS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import OrderNotFound
from chimera.workers.handler import Context

S = OrderStatus
OPEN = {S.SUBMITTED, S.UNKNOWN, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_CANCEL}
CHIMERA_CID = re.compile(r"^c[A-Za-z0-9]{1,8}-[0-9a-f]{8,}$")
param = periodic.param


def is_chimera_cid(cid: str) -> bool:
    return bool(CHIMERA_CID.match(cid or ""))


def jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


class Run:
    def __init__(self, ctx: Context, env: Envelope, account_id: str) -> None:
        self.ctx, self.env, self.account_id = ctx, env, account_id
        self.run_id = env.idempotency_key
        self.settle_ms = param(ctx, "settle_ms", 3000)
        self.stuck_ms = max(param(ctx, "stuck_ms", 60_000), self.settle_ms)
        self.fixed: list[dict] = []
        self.adopted: list[dict] = []
        self.closed: list[dict] = []
        self.unresolved: list[dict] = []
        self.deferred: list[dict] = []
        self.emits: list[Emit] = []
        self.sets: dict[str, tuple[set, set]] = {}
        self._flight: list[dict] | None = None
        self.touched: set[str] = set()  # legs (client order ids) this run wrote: its own findings, not in flight

    def alert(self, code: str, message: str, **context: str) -> None:
        self.emits.append(Emit(keys.ALERTS, Alert(level="ERROR", code=code, message=message,
                                                  context={"account_id": self.account_id, **context}),
                               f"{self.run_id}:alert:{code}:{context.get('ref', '')}", self.account_id))

    def flight_legs(self, as_of: int | None = None) -> list[dict]:
        """Legs (FUT, this account) whose outcome S4/S3/S6 are still applying: changed within the settle
        window before ``as_of`` (or after it). ``as_of`` is when a pass started reading the venue: a run
        can take seconds under load, and a leg that filled meanwhile is in flight however long ago its
        update looks by the time the store is read. Without it, the first call's answer is kept."""
        if self._flight is None or as_of is not None:
            now = self.ctx.now_ms() if as_of is None else as_of
            recent = self.ctx.store.query(ORDERS, {"market": "FUT", "updated_at": (">=", now - self.stuck_ms)})
            self._flight = [d for d in recent if mine(d, self.account_id) and d["client_order_id"] not in self.touched
                            and in_flight(d, now, self.settle_ms, self.stuck_ms)]
        return self._flight

    # --- orders ---------------------------------------------------------------------------------

    def orders(self, fut) -> None:
        ctx = self.ctx
        # Venue first, store second: a leg created between the two reads is recent, hence in flight.
        venue_open = {o.client_order_id: o for o in read(fut.open_orders) + read(fut.open_algo_orders)}
        live = {d["client_order_id"]: d for d in ctx.store.query(ORDERS, {"market": "FUT",
                                                                          "status": ("in", [s.value for s in OPEN])})
                if mine(d, self.account_id)}
        flight = {d["client_order_id"] for d in self.flight_legs()}
        store_ids = {c for c in live if c not in flight}
        venue_ids = {c for c in venue_open if c not in flight}
        self.sets["orders"] = (store_ids, venue_ids)
        self.deferred += [{"type": "order", "ref": c} for c in sorted(flight & (set(live) | set(venue_open)))]
        for cid in sorted(store_ids & venue_ids):
            doc, vo = live[cid], venue_open[cid]
            if vo.filled_qty and dec(doc.get("filled_qty")) != vo.filled_qty:
                self._adopt_venue_state(doc, vo, "filled_qty", doc.get("filled_qty"), str(vo.filled_qty))
        for cid in sorted(store_ids - venue_ids):
            self._gone_from_venue(fut, live[cid])
        for cid in sorted(venue_ids - store_ids):
            self._unknown_venue_order(venue_open[cid])

    def _adopt_venue_state(self, doc: dict, vo, field: str, was, now) -> dict | None:
        try:
            new = legs.adopt(self.ctx.store, doc, vo, self.ctx.now_ms())
        except (RetryableError, PermanentError) as exc:  # changed meanwhile / venue says the impossible
            self.unresolved.append({"type": "order", "ref": doc["client_order_id"], "why": str(exc)[:200]})
            return None
        self.touched.add(doc["client_order_id"])
        self.fixed_item("order", doc["client_order_id"], field, was, now)
        return new

    def _gone_from_venue(self, fut, doc: dict) -> None:
        try:
            vo = read(fut.query, doc["symbol"], doc["client_order_id"], bool(doc.get("algo")))
        except OrderNotFound:
            vo = None
        if vo is None:
            self._close_stale_order(doc)
        elif vo.status in ("NEW", "PARTIALLY_FILLED", "TRIGGERED"):
            self.deferred.append({"type": "order", "ref": doc["client_order_id"], "why": "opened meanwhile"})
        else:  # a FILLED closing leg closes its position in the positions pass
            self._adopt_venue_state(doc, vo, "status", doc["status"], vo.status)

    def _close_stale_order(self, doc: dict) -> None:
        key = legs.leg_key(doc["intent_id"], doc["leg"])
        patch = {"status": S.CANCELED.value, "reconcile": "CLOSED_NOT_AT_VENUE", "reason": "RECONCILED",
                 "updated_at": self.ctx.now_ms()}
        # A reconciler finding is a venue fact: no such order. Straight to CANCELED (compare-and-set).
        if not self.ctx.store.update_if(ORDERS, key, patch, {"status": doc["status"]}):
            self.unresolved.append({"type": "order", "ref": doc["client_order_id"], "why": "changed during reconcile"})
            return
        self.touched.add(doc["client_order_id"])
        item = {"type": "order", "ref": doc["client_order_id"], "intent_id": doc["intent_id"],
                "symbol": doc["symbol"], "was": doc["status"], "action": "CLOSED_NOT_AT_VENUE"}
        self.closed.append(item)
        strategy_event(self.ctx, "RECONCILE_ORDER_CLOSED", f"{self.run_id}:{doc['client_order_id']}", item)

    def _unknown_venue_order(self, vo) -> None:
        cid = vo.client_order_id
        known = self.ctx.store.query(ORDERS, {"client_order_id": cid}, limit=1)
        if known:  # ended in the store long ago, yet open at the venue: needs a human
            self.unresolved.append({"type": "order", "ref": cid, "store_status": known[0]["status"],
                                    "why": "open at the venue, ended in the store"})
            self.alert("RECONCILE_ORDER_STATUS", f"order {cid} is open at the venue but {known[0]['status']} "
                       "in the store", ref=cid, symbol=vo.symbol)
            return
        intent_id = f"recon:{self.account_id}:{cid}"
        now = self.ctx.now_ms()
        purpose = "STOP" if vo.algo else "ENTRY"
        self.ctx.store.insert_if_absent(INTENTS, intent_id, {
            "intent_id": intent_id, "market": "FUT", "symbol": vo.symbol, "side": vo.side, "qty": str(vo.qty),
            "exec_policy": vo.type, "purpose": purpose, "reduce_only": vo.reduce_only, "phase": "WORKING",
            "adopted_by": "reconciler", "account_id": self.account_id, "created_at": now})
        leg = legs.new_leg_doc({"intent_id": intent_id, "market": "FUT", "symbol": vo.symbol,
                                "account_id": self.account_id}, "adopted",
                               order_type=vo.type, side=vo.side, qty=vo.qty, now_ms=now, price=vo.price or None,
                               stop_price=vo.stop_price or None, reduce_only=vo.reduce_only, algo=vo.algo,
                               purpose=purpose)
        self.ctx.store.insert_if_absent(ORDERS, legs.leg_key(intent_id, "adopted"), {
            **leg, "client_order_id": cid, "status": S.ACCEPTED.value, "venue_order_id": vo.venue_order_id,
            "filled_qty": str(vo.filled_qty or 0), "reason": "adopted by reconciler", "account_id": self.account_id})
        item = {"type": "order", "ref": cid, "intent_id": intent_id, "symbol": vo.symbol}
        if is_chimera_cid(cid):
            self.adopted.append(item)
            strategy_event(self.ctx, "RECONCILE_ADOPTED", f"{self.run_id}:{cid}", {**item, "state": "ACTIVE"})
            return
        self.closed.append({**item, "action": "CANCEL_FOREIGN"})
        strategy_event(self.ctx, "RECONCILE_ORDER_CANCEL", f"{self.run_id}:{cid}", item)
        self.emits.append(Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=intent_id, symbol=vo.symbol, client_order_id=cid,
                                                              reason="reconcile: unknown venue order"),
                               f"{intent_id}:cancel", self.account_id))
        self.alert("RECONCILE_UNKNOWN_ORDER", f"unknown open order {cid} on {vo.symbol}: canceling",
                   ref=cid, symbol=vo.symbol)

    # --- report -----------------------------------------------------------------------------------

    def fixed_item(self, type_: str, ref: str, field: str, was, now) -> None:
        item = {"type": type_, "ref": ref, "field": field, "was": str(was), "now": str(now)}
        self.fixed.append(item)
        strategy_event(self.ctx, "RECONCILE_QTY_FIXED" if field == "qty" else "RECONCILE_FIXED", f"{self.run_id}:{ref}", item)

    def differences(self) -> int:
        return len(self.fixed) + len(self.adopted) + len(self.closed) + len(self.unresolved)

    def report(self, scope: str, requested_by: str) -> dict:
        a = set().union(*(s for s, _ in self.sets.values())) if self.sets else set()
        b = set().union(*(v for _, v in self.sets.values())) if self.sets else set()
        consistency = {name: round(jaccard(s, v), 6) for name, (s, v) in self.sets.items()}
        consistency["all"] = round(jaccard(a, b), 6)
        summary = {"scope": scope, "account_id": self.account_id, "requested_by": requested_by,
                   **{f"{n}_store": len(s) for n, (s, _) in self.sets.items()},
                   **{f"{n}_venue": len(v) for n, (_, v) in self.sets.items()},
                   "fixed": len(self.fixed), "adopted": len(self.adopted), "closed": len(self.closed),
                   "unresolved": len(self.unresolved), "deferred": len(self.deferred)}
        return {"run_id": self.run_id, "summary": summary, "fixed": self.fixed, "adopted": self.adopted,
                "closed": self.closed, "unresolved": self.unresolved, "deferred": self.deferred[:100],
                "consistency": consistency,
                # venue quantity no strategy's virtual position explains (the vpos role's books)
                "virtual_unassigned": virtual_views.unassigned(self.ctx.store, self.account_id),
                "consistent": consistency["all"] == 1.0 and self.differences() == 0,
                "finished_at": self.ctx.now_ms()}


def _degrade_or_lift(ctx: Context, run: Run, report: dict) -> list[Emit]:
    now = ctx.now_ms()
    if report["consistent"]:
        # Lifted only by a run that checked everything: deferred work is neither proof nor blame.
        return [] if run.deferred else degrade.lift(risk(ctx), run_id=run.run_id, account_id=run.account_id,
                                                    now_ms=now)
    every = periodic.interval_ms(ctx)
    ttl = param(ctx, "degrade_ttl_ms", max(3 * every, 60_000))
    s = report["summary"]
    # The first differences by name: an operator (and the drill's report) sees what disagreed, not only how much.
    first = [f"{k} {d.get('type', '')} {d.get('ref', '')}".strip()
             for k in ("adopted", "fixed", "closed", "unresolved") for d in report[k][:2]]
    why = (f"consistency {report['consistency']['all']}, fixed {s['fixed']}, adopted {s['adopted']}, "
           f"closed {s['closed']}, unresolved {s['unresolved']}" + (f" ({'; '.join(first)})" if first else ""))
    return degrade.degrade(risk(ctx), run_id=run.run_id, account_id=run.account_id, now_ms=now, ttl_ms=ttl, why=why)


def run_reconcile(env: Envelope, ctx: Context) -> list[Emit]:
    """One ``Reconcile`` run for the envelope's account (a periodic run arms the next one first)."""
    cmd: Reconcile = env.payload
    run = Run(ctx, env, env.account_id or "main")
    nxt = periodic.next_run(ctx, run.account_id) if cmd.requested_by == periodic.PERIODIC else []
    fut = venue(ctx, run.account_id).fut  # the account's client from the context's venues port
    if cmd.scope in ("ALL", "ORDERS"):
        run.orders(fut)
    if cmd.scope in ("ALL", "POSITIONS"):
        pos_pass.reconcile(run, fut)
    spot_pass.reconcile(run, venue(ctx, run.account_id).spot, cmd.scope)  # SPOT orders, OCO lists, balances
    report = run.report(cmd.scope, cmd.requested_by)
    strategy_event(ctx, "RECONCILE_RUN", run.run_id, report)
    done = OpsEvent(kind="RECONCILE_DONE", actor=cmd.requested_by or "reconciler",
                    detail={"run_id": run.run_id, "account_id": run.account_id,
                            "consistency": str(report["consistency"]["all"]),
                            "consistent": str(report["consistent"]).lower(), "fixed": str(len(run.fixed)),
                            "adopted": str(len(run.adopted)), "closed": str(len(run.closed)),
                            "unresolved": str(len(run.unresolved))})
    return [*nxt, *run.emits, *_degrade_or_lift(ctx, run, report),
            Emit(keys.OPS_EVENTS, done, f"{run.run_id}:done", run.account_id)]


__all__ = ["is_chimera_cid", "jaccard", "run_reconcile"]
