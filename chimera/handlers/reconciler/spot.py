"""S5 spot pass: the account's spot orders (OCO lists included) and balances vs the store, both ways.

Runs after the futures passes of the same ``Run`` (same account, same report, same degrade rule).

Orders, by client order id, the venue's open orders vs the store's open SPOT legs of the account
(legs in flight are deferred, exactly as for futures):

* open at both: the venue's fill progress wins (``legs.adopt``);
* in the store, gone from the venue: asked by client id. Never there -> CANCELED
  (``CLOSED_NOT_AT_VENUE``). Ended there (filled while the workers were down, expired as an OCO
  sibling, cancelled by hand) -> the leg takes the venue's state, its trades are booked into
  ``fills`` from the venue's trade history (``myTrades``, keyed per trade: once), and the spot
  position it belongs to is settled through S6 (``positions/spot.py``: reduced or CLOSED with the
  venue's money);
* at the venue, unknown to the store: ``reconciler.spot_unknown_order_policy``
  ``adopt_or_cancel`` (default): an order with a Chimera client id is adopted (intent + leg
  documents, ACTIVE), any other is cancelled through S4 (``CancelOrder``; an OCO list is taken
  whole: both legs are adopted or cancelled together, and cancelling one leg ends the list at the
  venue), with an ERROR alert; ``alert_only``: reported unresolved with an ERROR alert, left open.
* a filled spot entry S6 never booked (a crash between fill and S6) is opened through S6 too.

Balances: for each non-cash asset (``reconciler.spot_cash_assets``, default USDT, USDC, FDUSD),
the venue's free + locked vs what the store explains: the open SPOT positions' quantities, the dust
the closed ones left (held - sold), and the holdings outside Chimera: the account's
``spot_baselines/<account>`` document, recorded by the first spot pass that finds nothing in flight
(what the venue held beyond the positions then), overridden per asset by
``reconciler.spot_holdings``. An asset whose symbol has work in flight (a leg or position changed
within ``settle_ms``, a store leg the venue no longer lists) is deferred. A difference above
``reconciler.spot_balance_tolerance`` (default 0) is a report entry (``unresolved``, type
``balance``) and an ERROR alert ``RECONCILE_SPOT_BALANCE``; the whole table is the audit document
``strategy_events/RECONCILE_SPOT_BALANCES:<run_id>``. Consistency sets: ``spot_orders`` (client ids)
and ``spot_balances`` (``asset:quantity`` checked).
"""

from __future__ import annotations

import re
from decimal import Decimal

from loguru import logger

from chimera.errors import PermanentError, RetryableError
from chimera.handlers.common import dec, strategy_event
from chimera.handlers.positions import lifecycle
from chimera.handlers.positions import spot as s6
from chimera.handlers.reconciler.common import in_flight, mine, read
from chimera.handlers.reconciler.periodic import param
from chimera.handlers.router import toolkit as legs
from chimera.schemas.documents.orders import OrderLeg, to_doc
from chimera.schemas.documents.positions import Position
from chimera.schemas.documents.positions import from_doc as position_from_doc
from chimera.schemas.messages import CancelOrder
from chimera.schemas.states import OrderStatus
from chimera.store.collections import FILLS, ORDER_INTENTS, ORDERS, POSITIONS, SPOT_BASELINES
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import OrderNotFound, VenueOrder, _translated

S = OrderStatus
OPEN = [s.value for s in (S.SUBMITTED, S.UNKNOWN, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_CANCEL)]
ENDED_AT_VENUE = ("FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH")
CASH = ["USDT", "USDC", "FDUSD"]
CHIMERA_CID = re.compile(r"^c[A-Za-z0-9]{1,8}-[0-9a-f]{8,}$")
ZERO = Decimal(0)


def reconcile(run, spot, scope: str = "ALL") -> None:
    """The spot pass of one run (``run``: ``core.Run``; ``spot``: the account's SpotTrading client).
    Scope ORDERS: orders only; POSITIONS: unbooked entries and balances; ALL: everything."""
    p = SpotPass(run, spot)
    if scope in ("ALL", "ORDERS"):
        p.orders()
    if scope in ("ALL", "POSITIONS"):
        p.entries()
        p.balances()


class SpotPass:
    def __init__(self, run, spot) -> None:
        self.run, self.ctx, self.spot = run, run.ctx, spot
        now = self.ctx.now_ms()
        recent = self.ctx.store.query(ORDERS, {"market": "SPOT", "updated_at": (">=", now - run.stuck_ms)})
        self.flight = [d for d in recent if mine(d, run.account_id) and in_flight(d, now, run.settle_ms, run.stuck_ms)]
        self.flight_ids = {d["client_order_id"] for d in self.flight}
        self.busy_symbols = {d["symbol"] for d in self.flight}

    # --- orders ------------------------------------------------------------------------------------

    def orders(self) -> None:
        run, ctx = self.run, self.ctx
        venue_open = {o.client_order_id: o for o in read(self.spot.open_orders)}
        lists = read(open_order_lists, self.spot)
        live = {d["client_order_id"]: d for d in ctx.store.query(ORDERS, {"market": "SPOT", "status": ("in", OPEN)})
                if mine(d, run.account_id)}
        store_ids = {c for c in live if c not in self.flight_ids}
        venue_ids = {c for c in venue_open if c not in self.flight_ids}
        run.sets["spot_orders"] = (store_ids, venue_ids)
        run.deferred += [{"type": "spot_order", "ref": c}
                         for c in sorted(self.flight_ids & (set(live) | set(venue_open)))]
        for cid in sorted(store_ids & venue_ids):
            doc, vo = live[cid], venue_open[cid]
            if vo.filled_qty and dec(doc.get("filled_qty")) != vo.filled_qty:
                run._adopt_venue_state(doc, vo, "filled_qty", doc.get("filled_qty"), str(vo.filled_qty))
        for cid in sorted(store_ids - venue_ids):
            self.busy_symbols.add(live[cid]["symbol"])  # its balance moved before the store knew: not a difference
            self._gone_from_venue(live[cid])
        unknown = sorted(venue_ids - store_ids)
        by_list = {o["clientOrderId"]: lst for lst in lists for o in lst.get("orders", [])}
        done: set[str] = set()
        for cid in unknown:
            if cid in done:
                continue
            lst = by_list.get(cid)
            members = [o["clientOrderId"] for o in lst["orders"]] if lst else [cid]
            done.update(members)
            self._unknown([venue_open[m] for m in members if m in venue_open], lst)

    def _gone_from_venue(self, doc: dict) -> None:
        try:
            vo = read(self.spot.query, doc["symbol"], doc["client_order_id"])
        except OrderNotFound:
            vo = None
        if vo is None:
            self.run._close_stale_order(doc)
        elif vo.status not in ENDED_AT_VENUE:
            self.run.deferred.append({"type": "spot_order", "ref": doc["client_order_id"], "why": "opened meanwhile"})
        else:
            new = self.run._adopt_venue_state(doc, vo, "status", doc["status"], vo.status)
            if new is not None and vo.filled_qty:
                self._book_trades(new, vo)
            self._settle_position_of(doc)

    def _book_trades(self, leg: OrderLeg, vo: VenueOrder) -> None:
        """The leg's trades from the venue's history into ``fills`` (insert-if-absent per trade)."""
        intent = legs.load_intent(self.ctx, leg.intent_id)
        for t in read(self.spot.trades, leg.symbol, vo.venue_order_id):
            fill = legs.fill_doc(intent, leg, trade_id=t["id"], price=Decimal(str(t["price"])),
                                 qty=Decimal(str(t["qty"])), fee=Decimal(str(t["commission"])),
                                 fee_asset=t["commissionAsset"], is_maker=bool(t.get("isMaker")),
                                 ts=int(t.get("time") or 0))
            self.ctx.store.insert_if_absent(FILLS, legs.fill_key(leg, t["id"]), to_doc(fill))

    def _settle_position_of(self, doc: dict) -> None:
        intent = self.ctx.store.get(ORDER_INTENTS, doc["intent_id"]) or {}
        pos = s6.position_of(self.ctx, intent) if intent else None
        if pos is not None:
            self._settle(pos, "CLOSED_BY_FILL")

    def _settle(self, pos: Position, action: str) -> Position | None:
        """S6 brings the position up to the venue's trades; a close or a change is reported."""
        try:
            new, out = s6.compute(self.ctx, pos, source="reconciler")
            if new == pos:
                return pos
            stored = lifecycle.write(self.ctx, pos, new)
        except (RetryableError, PermanentError) as exc:  # moved meanwhile: S6 is on it
            self.run.unresolved.append({"type": "spot_position", "ref": pos.pos_id, "why": str(exc)[:200]})
            return None
        self.run.emits += out
        item = {"type": "spot_position", "ref": pos.pos_id, "symbol": pos.symbol, "was": pos.state.value,
                "now": stored.state.value, "qty": str(stored.qty), "realized_pnl": str(stored.realized_pnl)}
        if stored.state.value == "CLOSED":
            self.run.closed.append({**item, "action": action})
            strategy_event(self.ctx, "RECONCILE_POSITION_CLOSED", f"{self.run.run_id}:{pos.pos_id}", item)
        elif pos.state.value == "PENDING_ENTRY":
            self.run.adopted.append(item)
            strategy_event(self.ctx, "RECONCILE_ADOPTED", f"{self.run.run_id}:{pos.pos_id}", item)
        else:
            self.run.fixed_item("spot_position", pos.pos_id, "qty", str(pos.qty), str(stored.qty))
        return stored

    def _unknown(self, orders: list[VenueOrder], lst: dict | None) -> None:
        run, ctx = self.run, self.ctx
        if not orders:
            return
        first = orders[0]
        ref = lst["listClientOrderId"] if lst else first.client_order_id
        known = [d for o in orders for d in ctx.store.query(ORDERS, {"client_order_id": o.client_order_id}, limit=1)]
        if known:  # ended in the store, yet open at the venue: needs a human
            run.unresolved.append({"type": "spot_order", "ref": ref, "store_status": known[0]["status"],
                                   "why": "open at the venue, ended in the store"})
            run.alert("RECONCILE_ORDER_STATUS", f"spot order {ref} is open at the venue but {known[0]['status']} "
                      "in the store", ref=ref, symbol=first.symbol)
            return
        policy = param(ctx, "spot_unknown_order_policy", "adopt_or_cancel")
        item = {"type": "spot_order", "ref": ref, "symbol": first.symbol,
                "orders": [o.client_order_id for o in orders], "list": bool(lst), "policy": policy}
        if policy == "alert_only":
            run.unresolved.append({**item, "why": "unknown open spot order left open (alert_only)"})
            run.alert("RECONCILE_UNKNOWN_ORDER", f"unknown open spot {'OCO ' if lst else ''}order {ref} on "
                      f"{first.symbol}: left open (alert_only)", ref=ref, symbol=first.symbol)
            return
        if policy != "adopt_or_cancel":
            raise PermanentError(f"reconciler.spot_unknown_order_policy={policy!r}: expected adopt_or_cancel or "
                                 "alert_only")
        intent_id = self._adopt_docs(orders, ref)
        item["intent_id"] = intent_id
        if all(is_chimera_cid(o.client_order_id) for o in orders):
            run.adopted.append(item)
            strategy_event(ctx, "RECONCILE_ADOPTED", f"{run.run_id}:{ref}", {**item, "state": "ACTIVE"})
            return
        run.closed.append({**item, "action": "CANCEL_FOREIGN"})
        strategy_event(ctx, "RECONCILE_ORDER_CANCEL", f"{run.run_id}:{ref}", item)
        # One CancelOrder for the whole intent: S4 cancels each live leg (the first ends an OCO list).
        run.emits.append(Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=intent_id, symbol=first.symbol, market="SPOT",
                                                             reason="reconcile: unknown venue order"),
                              f"{intent_id}:cancel", run.account_id))
        run.alert("RECONCILE_UNKNOWN_ORDER", f"unknown open spot {'OCO ' if lst else ''}order {ref} on "
                  f"{first.symbol}: canceling", ref=ref, symbol=first.symbol)

    def _adopt_docs(self, orders: list[VenueOrder], ref: str) -> str:
        """Intent + one leg document per venue order (so S4 can cancel them, and S5 knows them next time)."""
        run, ctx = self.run, self.ctx
        first = orders[0]
        intent_id = f"recon:{run.account_id}:{ref}"
        now = ctx.now_ms()
        ctx.store.insert_if_absent(ORDER_INTENTS, intent_id, {
            "intent_id": intent_id, "market": "SPOT", "symbol": first.symbol, "side": first.side,
            "qty": str(first.qty), "exec_policy": "OCO" if len(orders) > 1 else first.type, "purpose": "EXIT"
            if first.side == "SELL" else "ENTRY", "phase": "WORKING", "adopted_by": "reconciler",
            "account_id": run.account_id, "created_at": now, "parent_intent_id": "recon"})
        for i, vo in enumerate(orders):
            leg_name = f"adopted{i}" if len(orders) > 1 else "adopted"
            leg = legs.new_leg_doc({"intent_id": intent_id, "market": "SPOT", "symbol": vo.symbol,
                                    "account_id": run.account_id}, leg_name, order_type=vo.type, side=vo.side,
                                   qty=vo.qty, now_ms=now, price=vo.price or None, stop_price=vo.stop_price or None,
                                   purpose="EXIT" if vo.side == "SELL" else "ENTRY")
            ctx.store.insert_if_absent(ORDERS, legs.leg_key(intent_id, leg_name), {
                **leg, "client_order_id": vo.client_order_id, "status": S.ACCEPTED.value,
                "venue_order_id": vo.venue_order_id, "filled_qty": str(vo.filled_qty or 0),
                "reason": "adopted by reconciler", "account_id": run.account_id})
        return intent_id

    # --- entries S6 never booked --------------------------------------------------------------------

    def entries(self) -> None:
        """A filled spot entry whose position is missing or still PENDING_ENTRY: opened through S6."""
        ctx, run = self.ctx, self.run
        since = ctx.now_ms() - param(ctx, "lookback_ms", 7 * 24 * 3600 * 1000)
        seen: set[str] = set()
        for d in ctx.store.query(ORDERS, {"market": "SPOT", "side": "BUY", "updated_at": (">=", since)}):
            if d["intent_id"] in seen or not mine(d, run.account_id) or not dec(d.get("filled_qty")) \
                    or d["client_order_id"] in self.flight_ids:
                continue
            seen.add(d["intent_id"])
            intent = ctx.store.get(ORDER_INTENTS, d["intent_id"]) or {}
            if intent.get("phase") not in ("PROTECT", "DONE") or intent.get("adopted_by"):
                continue
            pos = s6.position_of(ctx, intent)
            if pos is None or pos.state.value == "PENDING_ENTRY":
                pos = pos or s6.ensure(ctx, intent)
                if pos is not None:
                    self._settle(pos, "ADOPTED")

    # --- balances ------------------------------------------------------------------------------------

    def balances(self) -> None:
        ctx, run = self.ctx, self.run
        venue = {a: (free, locked) for a, free, locked in read(account_balances, self.spot)}
        cash = set(param(ctx, "spot_cash_assets", CASH))
        positions, dust = self._explained()
        busy = self._busy_assets(positions)
        baseline = self._baseline(venue, positions, dust, cash, busy)
        override = {a: Decimal(str(v)) for a, v in (param(ctx, "spot_holdings", {}) or {}).items()}
        tolerance = Decimal(str(param(ctx, "spot_balance_tolerance", 0)))
        rows, store_set, venue_set = [], set(), set()
        for asset in sorted((set(venue) | set(positions) | set(baseline)) - cash):
            free, locked = venue.get(asset, (ZERO, ZERO))
            outside = override.get(asset, baseline.get(asset, ZERO))
            explained = positions.get(asset, ZERO) + dust.get(asset, ZERO) + outside
            total = free + locked
            row = {"asset": asset, "venue_free": str(free), "venue_locked": str(locked), "venue_total": str(total),
                   "positions": str(positions.get(asset, ZERO)), "dust": str(dust.get(asset, ZERO)),
                   "outside": str(outside), "explained": str(explained), "diff": str(total - explained)}
            if asset in busy:
                rows.append({**row, "status": "DEFERRED"})
                run.deferred.append({"type": "balance", "ref": asset, "venue": str(total), "store": str(explained)})
                continue
            store_set.add(f"{asset}:{explained.normalize()}")
            venue_set.add(f"{asset}:{total.normalize()}")
            if abs(total - explained) <= tolerance:
                rows.append({**row, "status": "OK"})
                continue
            rows.append({**row, "status": "DIFF"})
            kind = "unexplained holding" if total > explained else "shortfall"
            run.unresolved.append({"type": "balance", "ref": asset, "venue": str(total), "store": str(explained),
                                   "diff": str(total - explained), "why": kind})
            run.alert("RECONCILE_SPOT_BALANCE", f"spot {asset}: the venue holds {total}, the store explains "
                      f"{explained} (positions {positions.get(asset, ZERO)}, outside {outside}): {kind} of "
                      f"{abs(total - explained)}", ref=asset, asset=asset)
        run.sets["spot_balances"] = (store_set, venue_set)
        strategy_event(ctx, "RECONCILE_SPOT_BALANCES", run.run_id, {
            "run_id": run.run_id, "account_id": run.account_id, "baseline": {a: str(v) for a, v in baseline.items()},
            "rows": rows})

    def _explained(self) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """Per base asset: open spot positions' quantity, and the dust closed ones left since the baseline."""
        ctx, run = self.ctx, self.run
        base_doc = ctx.store.get(SPOT_BASELINES, run.account_id) or {}
        held: dict[str, Decimal] = {}
        for pos in s6.open_spot_positions(ctx, run.account_id):
            asset = s6.assets(self.spot, pos.symbol)[0]
            held[asset] = held.get(asset, ZERO) + pos.qty
        dust: dict[str, Decimal] = {}
        since = int(base_doc.get("set_at") or 0)
        for doc in ctx.store.query(POSITIONS, {"state": "CLOSED", "closed_at": (">=", since)}):
            pos = position_from_doc(doc)
            if pos.market != "SPOT" or pos.account_id != run.account_id or not pos.base_qty:
                continue
            left = pos.base_qty - sum(pos.fills_out.values(), ZERO)
            if left > 0:
                asset = s6.assets(self.spot, pos.symbol)[0]
                dust[asset] = dust.get(asset, ZERO) + left
        return held, dust

    def _busy_assets(self, positions: dict[str, Decimal]) -> set[str]:
        now = self.ctx.now_ms()
        symbols = set(self.busy_symbols)
        for doc in self.ctx.store.query(POSITIONS, {"updated_at": (">=", now - self.run.settle_ms)}):
            if doc.get("market") == "SPOT" and mine(doc, self.run.account_id):
                symbols.add(doc["symbol"])
        return {s6.assets(self.spot, s)[0] for s in symbols}

    def _baseline(self, venue: dict, positions: dict, dust: dict, cash: set, busy: set) -> dict[str, Decimal]:
        """The holdings outside Chimera: recorded once, by a pass with nothing in flight."""
        ctx, run = self.ctx, self.run
        doc = ctx.store.get(SPOT_BASELINES, run.account_id)
        if doc is not None:
            return {a: Decimal(v) for a, v in doc.get("assets", {}).items()}
        if busy:
            return {}
        assets = {a: f + lk - positions.get(a, ZERO) - dust.get(a, ZERO) for a, (f, lk) in venue.items() if a not in cash}
        ctx.store.insert_if_absent(SPOT_BASELINES, run.account_id, {
            "account_id": run.account_id, "assets": {a: str(v) for a, v in assets.items() if v},
            "set_at": ctx.now_ms(), "run_id": run.run_id})
        logger.info("s5 {}: spot baseline recorded (holdings outside Chimera): {}", run.account_id, assets)
        doc = ctx.store.get(SPOT_BASELINES, run.account_id) or {}
        return {a: Decimal(v) for a, v in doc.get("assets", {}).items()}


def is_chimera_cid(cid: str) -> bool:
    # adapter.client_order_id's shape: c<leg, 8 max>-<sha256 hex>, cut at 36 (core.py checks the same for FUT).
    return bool(CHIMERA_CID.match(cid or ""))


# --- venue reads the adapter does not make (SDK client, or the in-process venue's operations) ----------


def _plain(data) -> object:
    if isinstance(data, list):
        return [_plain(x) for x in data]
    return data.to_dict() if hasattr(data, "to_dict") else data


def account_balances(spot) -> list[tuple[str, Decimal, Decimal]]:
    """(asset, free, locked) of every non-zero balance (``GET /api/v3/account``)."""
    if hasattr(spot, "_call"):  # the in-process venue
        from chimera.venues.local.server import rest_spot

        raw = _plain(spot._call("get_account", rest_spot.account, omitZeroBalances="true"))
    else:
        with _translated():
            raw = _plain(spot.api.get_account(omit_zero_balances=True).data())
    rows = [(b["asset"], Decimal(str(b["free"])), Decimal(str(b["locked"]))) for b in raw.get("balances", [])]
    return [r for r in rows if r[1] or r[2]]


def open_order_lists(spot) -> list[dict]:
    """The account's executing order lists (``GET /api/v3/openOrderList``), Binance field names."""
    if hasattr(spot, "_call"):
        from chimera.venues.local.server import rest_spot

        return _plain(spot._call("open_order_list", rest_spot.open_lists))
    with _translated():
        return _plain(spot.api.open_order_list().data())


__all__ = ["SpotPass", "account_balances", "open_order_lists", "reconcile"]
