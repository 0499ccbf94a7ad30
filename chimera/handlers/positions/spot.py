"""S6 for SPOT positions: the one record of a spot holding Chimera bought, from entry to exit.

Spot is long only (nothing to borrow), and S4 protects a spot entry itself (``router/spot.py``): a native
OCO (LIMIT_MAKER take-profit + STOP_LOSS_LIMIT), else a stop-loss-limit with a separate take-profit, else
its local guard stop. S6 keeps the position those orders protect:

* the entry's results (``leg`` ``e``/``mkt``...) open it: PENDING_ENTRY -> ACTIVE with what it *holds*,
  the bought quantity less the fee the venue took in the base asset, at the entry's average price;
* the protection result (``oco`` / ``sl`` / ``guard``) records ``protection`` and ``protection_orders``;
* a sell of one of those orders, of the guard's exit (``<intent>:guard``) or of any exit intent naming
  the position (``pos_id`` or ``parent_intent_id``) reduces it, and the last one CLOSES it. Whichever
  message says so first (S4's result, S1's ``executionReport`` on ``venue:{reports}``, or S5 after a
  downtime) does it, and every later one finds nothing new.

Money comes from the venue's own trades (``myTrades`` per order), recomputed on every change, never
accumulated from messages, so a redelivery or a report racing a result cannot count a fill twice:
``entry_cost`` = quote paid, ``exit_proceeds`` = quote received before fees, ``fees`` = every fee in the
quote asset (a base-asset fee valued at its trade's price), ``realized_pnl`` = quote received - quote
fees on the exits - the entry cost of what was sold (net of every fee, since the base fee shrank what
was held). A remainder below the symbol's step size is dust: the position is flat.

At the close, protection orders still live in the store are cancelled through S4 (an OCO's sibling is
expired by the venue itself, so it is left alone), and S3's budget goes back (``lifecycle.write``).
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.common import dec, venue
from chimera.handlers.positions import lifecycle
from chimera.handlers.positions.common import PE, ZERO, Out, create, event, load, moved
from chimera.schemas.documents.positions import Position, from_doc, replace
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import CancelOrder, OrderIntent, OrderResult, SubmitOrder, VenueReport
from chimera.schemas.states import PositionStatus as P
from chimera.store.collections import GUARD_STOPS, ORDER_INTENTS, ORDERS, POSITIONS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

PROTECTION_LEGS = {"otp": "TAKE_PROFIT", "osl": "STOP_LOSS", "tp": "TAKE_PROFIT", "sl": "STOP_LOSS"}
LIVE = ("SUBMITTED", "UNKNOWN", "ACCEPTED", "TRIGGERED", "PARTIALLY_FILLED")
GONE = ("CANCELED", "EXPIRED", "REJECTED")
EXIT_REASON = {"STOP": "STOP_LOSS", "TAKE_PROFIT": "TAKE_PROFIT"}
_ASSETS: dict[str, tuple[str, str]] = {}


# --- the route-table hooks: SPOT here, everything else to the futures handler --------------------------


def or_futures_result(futures):
    """``OrderResult``: a SPOT intent's result is handled here, any other by ``futures``."""
    def on_result(env: Envelope, ctx: Context) -> Out:
        intent = ctx.store.get(ORDER_INTENTS, env.payload.intent_id) or {}
        return on_spot_result(ctx, env.payload, intent) if intent.get("market") == "SPOT" else futures(env, ctx)

    return on_result


def or_futures_report(futures):
    """``VenueReport``: a SPOT report is handled here, any other by ``futures``."""
    def on_report(env: Envelope, ctx: Context) -> Out:
        return on_spot_report(ctx, env.payload) if env.payload.market == "SPOT" else futures(env, ctx)

    return on_report


# --- handlers -------------------------------------------------------------------------------------------


def on_spot_result(ctx: Context, res: OrderResult, intent: dict) -> Out:
    pos = position_of(ctx, intent)
    if pos is None and res.purpose == "ENTRY" and intent.get("side", "BUY") == "BUY" \
            and not intent.get("parent_intent_id"):  # an adopted order (parent "recon") is no entry of ours
        pos = lifecycle.pending(ctx, res, intent)
    return [] if pos is None else settle(ctx, pos, source="result")


def on_spot_report(ctx: Context, rep: VenueReport) -> Out:
    """A trade of one of our sells: it may reduce or close its position before S4's result says so."""
    if rep.exec_type != "TRADE" or rep.side != "SELL":
        return []
    rows = ctx.store.query(ORDERS, {"client_order_id": rep.client_order_id}, limit=1)
    intent = ctx.store.get(ORDER_INTENTS, rows[0]["intent_id"]) if rows else None
    pos = position_of(ctx, intent) if intent else None
    if pos is None or not pos.is_open:
        return []  # not one of Chimera's spot exits: S5 reconciles the balance
    return settle(ctx, pos, source=f"venue:{rep.exec_type}:{rep.client_order_id}",
                  known={rep.client_order_id: rep.venue_order_id})


def position_of(ctx: Context, intent: dict) -> Position | None:
    """The position an intent belongs to: its ``pos_id``, its parent's position, or its own id (an entry)."""
    if intent.get("pos_id"):
        return load(ctx, intent["pos_id"])
    parent = intent.get("parent_intent_id")
    if parent:
        up = ctx.store.get(ORDER_INTENTS, parent) or {}
        return load(ctx, up.get("pos_id") or parent)
    return load(ctx, intent.get("intent_id", ""))


# --- the position from the store and the venue's trades -------------------------------------------------


def settle(ctx: Context, pos: Position, *, source: str, known: dict[str, str] | None = None) -> Out:
    """Bring the position up to what the venue did: entry booked, protection noted, exits booked, and
    write it (compare-and-set). Idempotent: the same venue trades give the same position."""
    new, out = compute(ctx, pos, source=source, known=known)
    lifecycle.write(ctx, pos, new)
    return out


def compute(ctx: Context, pos: Position, *, source: str, known: dict[str, str] | None = None) -> tuple[Position, Out]:
    if pos.state not in (P.PENDING_ENTRY, P.ACTIVE, P.PENDING_CLOSING):
        return pos, []
    client = venue(ctx, pos.account_id).spot
    intent = ctx.store.get(ORDER_INTENTS, pos.entry_intent_id) or {}
    legs = ctx.store.query(ORDERS, {"intent_id": pos.entry_intent_id})
    out: Out = []
    if pos.state == P.PENDING_ENTRY:
        pos, out = _entry(ctx, client, pos, intent, legs)
        if pos.state == P.PENDING_ENTRY:
            return pos, out
    guarding = legs + ctx.store.query(ORDERS, {"intent_id": protect_intent_id(pos)})
    pos, more = _protection(ctx, pos, guarding)
    out += more
    if not pos.protection and pos.sl_price is not None and intent.get("exec_policy") not in ("OCO", "GUARD"):
        pos, more = _ask_protection(client, pos)
        out += more
    new, more = _exits(ctx, client, pos, guarding, source, known or {})
    return new, out + more


def protect_intent_id(pos: Position) -> str:
    """The protection S6 asks S4 for when the entry came without any (a plain MARKET spot entry)."""
    return f"{pos.pos_id}:prot"


def _buys(legs: list[dict]) -> list[dict]:
    return [d for d in legs if d.get("side") == "BUY" and d.get("venue_order_id") and dec(d.get("filled_qty"))]


def _entry_totals(client, symbol: str, buys: list[dict]) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(bought, quote paid, fees in quote, fee taken in the base asset) over the entry's venue trades."""
    base, quote = assets(client, symbol)
    bought = cost = fees = base_fee = ZERO
    for leg in buys:
        for t in client.trades(symbol, leg["venue_order_id"]):
            qty, price, fee = dec(t["qty"]), dec(t["price"]), dec(t["commission"])
            bought, cost = bought + qty, cost + dec(t["quoteQty"])
            base_fee += fee if t["commissionAsset"] == base else ZERO
            fees += _in_quote(fee, t["commissionAsset"], base, quote, price)
    return bought, cost, fees, base_fee


def _entry(ctx: Context, client, pos: Position, intent: dict, legs: list[dict]) -> tuple[Position, Out]:
    buys = _buys(legs)
    if not buys:
        final = intent.get("result") or {}
        if intent.get("phase") == "DONE" and final.get("status") in GONE:
            return lifecycle.entry_failed(ctx, pos, f"{final['status']}: {final.get('reason', '')}".strip(": "))
        return pos, []
    if intent.get("phase") not in ("PROTECT", "DONE"):
        return pos, []  # S4 is still on the entry: the held quantity is not final yet
    bought, cost, fees, base_fee = _entry_totals(client, pos.symbol, buys)
    if not bought:
        return pos, []
    held = bought - base_fee
    pos = moved(pos, PE.ENTRY_FILLED, qty=held, entry_price=cost / bought, entry0=cost / bought, base_qty=held,
                gross_qty=bought, fills_in={pos.entry_intent_id: (bought, cost)}, entry_cost=cost, fees=fees,
                quote_asset=assets(client, pos.symbol)[1], sl_price=dec(intent.get("sl_price")),
                tp_price=dec(intent.get("tp_price")), leverage=1)
    return pos, [event(pos, "OPENED")]


def _ask_protection(client, pos: Position) -> tuple[Position, Out]:
    """S4's spot protection for what is held: OCO with the take-profit, else a stop-loss-limit, else its
    guard stop (``router/spot.py``, SELL mode). Asked once: ``protection`` says REQUESTED until legs exist."""
    qty = client.filters(pos.symbol).qty(pos.qty)
    intent = OrderIntent(intent_id=protect_intent_id(pos), market="SPOT", symbol=pos.symbol, side="SELL", qty=qty,
                         exec_policy="OCO", purpose="STOP", sl_price=pos.sl_price, tp_price=pos.tp_price,
                         pos_id=pos.pos_id, parent_intent_id=pos.entry_intent_id)
    pos = replace(pos, protection="REQUESTED")
    return pos, [Emit(keys.ORD_COMMANDS, SubmitOrder(intent=intent), intent.intent_id, account_id=pos.account_id)]


def _protection(ctx: Context, pos: Position, legs: list[dict]) -> tuple[Position, Out]:
    placed = {d["leg"]: d for d in legs if d.get("leg") in PROTECTION_LEGS
              and d.get("status") not in ("INITIALIZED", "REJECTED")}
    guard = ctx.store.get(GUARD_STOPS, pos.entry_intent_id) or ctx.store.get(GUARD_STOPS, protect_intent_id(pos))
    if {"otp", "osl"} <= set(placed):
        kind = "OCO"
    elif "sl" in placed:
        kind = "STOP"
    elif guard is not None:
        kind = "GUARD"
    else:
        return pos, []
    ids = tuple(sorted(d["client_order_id"] for d in placed.values()))
    if (kind, ids) == (pos.protection, pos.protection_orders):
        return pos, []
    pos = replace(pos, protection=kind, protection_orders=ids)
    return pos, [event(pos, "SL_ARMED", sl_price=pos.sl_price, tag=f"{kind}:{','.join(ids)}")]


def _exit_legs(ctx: Context, pos: Position, legs: list[dict]) -> list[dict]:
    """Every sell that spends what the position holds: its protection legs and its exit intents' orders."""
    out = [d for d in legs if d.get("side") == "SELL"]
    exits = {pos.entry_intent_id + ":guard"}
    exits |= {d["intent_id"] for d in ctx.store.query(ORDER_INTENTS, {"parent_intent_id": pos.entry_intent_id})}
    exits |= {d["intent_id"] for d in ctx.store.query(ORDER_INTENTS, {"pos_id": pos.pos_id})}
    exits.discard(pos.entry_intent_id)
    for iid in sorted(exits):
        out += [d for d in ctx.store.query(ORDERS, {"intent_id": iid}) if d.get("side") == "SELL"]
    return list({d["client_order_id"]: d for d in out}.values())  # a protection intent is found both ways


def _exits(ctx: Context, client, pos: Position, legs: list[dict], source: str,
           known: dict[str, str]) -> tuple[Position, Out]:
    base, quote = assets(client, pos.symbol)
    sold: dict[str, Decimal] = {}
    proceeds = exit_fees = ZERO
    last: tuple[int, dict, Decimal] | None = None  # the latest exit trade: its order names the close
    for leg in _exit_legs(ctx, pos, legs):
        vid = leg.get("venue_order_id") or known.get(leg["client_order_id"])
        if not vid:
            continue
        for t in client.trades(pos.symbol, vid):
            qty, price, fee = dec(t["qty"]), dec(t["price"]), dec(t["commission"])
            sold[leg["client_order_id"]] = sold.get(leg["client_order_id"], ZERO) + qty
            proceeds += dec(t["quoteQty"])
            exit_fees += _in_quote(fee, t["commissionAsset"], base, quote, price)
            if last is None or int(t.get("time") or 0) >= last[0]:
                last = (int(t.get("time") or 0), leg, price)
    total = sum(sold.values(), ZERO)
    if last is None or sold == pos.fills_out:
        return pos, []
    entry_fees = _entry_totals(client, pos.symbol, _buys(legs))[2]
    basis = pos.entry_cost * min(total, pos.base_qty) / pos.base_qty if pos.base_qty else ZERO
    pnl = proceeds - exit_fees - basis
    left = pos.base_qty - total
    step = client.filters(pos.symbol).step
    pos = replace(pos, fills_out=sold, exit_proceeds=proceeds, fees=entry_fees + exit_fees, realized_pnl=pnl)
    _, leg, price = last
    if left >= step:
        pos = moved(pos, PE.POSITION_REDUCED, qty=left)
        return pos, [event(pos, "REDUCED", tag=f"{leg['client_order_id']}:{total}", exit_price=price,
                           realized_pnl=pnl)]
    exit_price = proceeds / total
    reason = PROTECTION_LEGS.get(leg.get("leg", "")) or EXIT_REASON.get(leg.get("purpose", ""), "EXIT")
    pos = moved(pos, PE.POSITION_CLOSED, qty=ZERO, exit_price=exit_price, exit_intent_id=leg["intent_id"],
                closed_by=source, close_reason=reason or "EXIT", closed_at=ctx.now_ms())
    return pos, [*_cancel_protection(pos, legs, leg), event(pos, "EXIT", exit_price=exit_price, realized_pnl=pnl)]


def _cancel_protection(pos: Position, legs: list[dict], closing: dict) -> list[Emit]:
    """Protection still live in the store once flat: S4 cancels it (it would sell what is no longer held).
    An OCO whose own leg closed the position is done at the venue (the sibling expired with it)."""
    if pos.protection == "OCO" and closing["client_order_id"] in pos.protection_orders:
        return []
    out = []
    for d in legs:
        if d.get("leg") in PROTECTION_LEGS and d.get("status") in LIVE and d["client_order_id"] != closing["client_order_id"]:
            out.append(Emit(keys.ORD_COMMANDS, CancelOrder(intent_id=d["intent_id"], symbol=pos.symbol,
                                                           client_order_id=d["client_order_id"], market="SPOT",
                                                           reason=f"position {pos.pos_id} closed"),
                            f"{pos.pos_id}:cancel:{d['client_order_id']}", account_id=pos.account_id))
    return out


# --- helpers (S5 uses them too) --------------------------------------------------------------------------


def _in_quote(fee: Decimal, asset: str, base: str, quote: str, price: Decimal) -> Decimal:
    if asset == quote:
        return fee
    if asset == base:
        return fee * price
    if fee:
        logger.warning("spot fee {} {} is in neither {} nor {}: left out of the position's fees", fee, asset,
                       base, quote)
    return ZERO


def assets(client, symbol: str) -> tuple[str, str]:
    """(base, quote) asset of a spot symbol, from the venue's exchangeInfo (read once per process)."""
    if symbol not in _ASSETS:
        for s in client._exchange_info().get("symbols", []):
            _ASSETS[s["symbol"]] = (s["baseAsset"], s["quoteAsset"])
    return _ASSETS[symbol]


def open_spot_positions(ctx: Context, account_id: str) -> list[Position]:
    """The account's live SPOT positions (PENDING_ENTRY included: its base asset may already be held)."""
    states = [P.PENDING_ENTRY.value, P.ACTIVE.value, P.PENDING_CLOSING.value]
    docs = ctx.store.query(POSITIONS, {"state": ("in", states)}, order_by="created_at")
    return [p for p in map(from_doc, docs) if p.market == "SPOT" and p.account_id == account_id]


def ensure(ctx: Context, intent: dict) -> Position | None:
    """S5: the position of a spot entry whose results S6 never saw (created PENDING_ENTRY, then settled)."""
    pos = position_of(ctx, intent)
    if pos is not None or intent.get("parent_intent_id") or intent.get("side") != "BUY":
        return pos
    return create(ctx, Position(pos_id=intent.get("pos_id") or intent["intent_id"], symbol=intent["symbol"],
                                side="BUY", market="SPOT", account_id=intent.get("account_id", "main"),
                                entry_intent_id=intent["intent_id"], signal_id=intent.get("signal_id", ""),
                                leverage=1))
