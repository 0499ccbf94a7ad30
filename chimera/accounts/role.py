"""The ``vpos`` role: keeps the virtual positions (``virtual_books``) of every account in the store.

Route table:

* ``VenueReport`` on ``venue:{reports}`` (S1 user data: every trade at the venue, Chimera's and
  anybody else's): a TRADE is attributed by its client order id (``attribution.py``) and booked
  to its strategy's position, UNASSIGNED when no Chimera order explains it. Lock: the account's
  book of that symbol; done-marker: S1's idempotency key; and the book itself remembers the trade
  ids it booked, so a redelivery after a crash between the write and the marker books nothing.
  Funding settled before the trade (``funding_records``, S1) is shared out first, so it goes to
  the positions held when it was paid.
* ``Reconcile`` on ``vpos:{commands}``: this role's own timer, one per account, every
  ``virtual.reconcile_ms`` (60 s): funding shared out, then Σ virtual qty per (symbol, position side)
  is compared with the venue's ``positionRisk`` and the difference moved to UNASSIGNED. The reading
  is bracketed by the account's newest trade id on the symbol (``userTrades``, limit 1) before and
  after: equal ids say exactly which trades the quantity includes, so a report still in flight for one
  of them later moves its quantity from UNASSIGNED to its strategy instead of counting it twice. A change of
  an UNASSIGNED quantity is announced as ``OpsEvent VIRTUAL_UNASSIGNED`` on ``ops:events`` and a
  WARN ``Alert`` on ``alerts`` (for S5's report and the UI).

USDT-M futures only: a SPOT report is acknowledged and left alone (spot holdings are balances that
other things move too; see docs/accounts.md).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from loguru import logger

from chimera.accounts import attribution
from chimera.accounts import virtual as vp
from chimera.errors import PermanentError, RetryableError
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Alert, OpsEvent, Reconcile, VenueReport
from chimera.store.collections import FUNDING_RECORDS, VIRTUAL_BOOKS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context, HandlerSpec, Route

DEFAULT_RECONCILE_MS = 60_000
FUNDING_SLACK_MS = 24 * 3600 * 1000  # funding rows re-read behind the cursor (ids de-duplicate them)
CAS_TRIES = 8
BOOKED_EXECS = ("TRADE", "CALCULATED")  # CALCULATED: Binance's liquidation / ADL execution


def is_forced_close(rep: VenueReport) -> bool:
    """The venue's own closing order: liquidation (``autoclose-<t>``) or ADL (``adl_autoclose``)."""
    cid = rep.client_order_id or ""
    return rep.order_type == "LIQUIDATION" or rep.exec_type == "CALCULATED" or cid.startswith(("autoclose-", "adl_"))


def _d(x) -> Decimal:
    return Decimal(str(x)) if x not in (None, "") else Decimal(0)


# --- store I/O of one book --------------------------------------------------------------------------


def load(store, account_id: str, symbol: str, market: str = "FUT") -> tuple[vp.VirtualBook, int | None]:
    raw = store.get(VIRTUAL_BOOKS, vp.book_key(account_id, market, symbol))
    book = vp.from_doc(raw)
    return (book, book.version) if book is not None else (vp.new_book(account_id, symbol, market), None)


def save(store, book: vp.VirtualBook, version: int | None) -> bool:
    """Compare-and-set on ``version`` (None: the book must not exist yet)."""
    doc = vp.to_doc(vp.msgspec.structs.replace(book, version=(version or 0) + 1))
    if version is None:
        return store.insert_if_absent(VIRTUAL_BOOKS, book.key, doc)
    return store.update_if(VIRTUAL_BOOKS, book.key, doc, {"version": version})


def change(store, account_id: str, symbol: str, step: Callable[[vp.VirtualBook], vp.VirtualBook | None],
           market: str = "FUT") -> tuple[vp.VirtualBook, vp.VirtualBook] | None:
    """Read, ``step``, compare-and-set, again on a lost race. ``(before, after)``, None if ``step`` had
    nothing to change."""
    for _ in range(CAS_TRIES):
        before, version = load(store, account_id, symbol, market)
        after = step(before)
        if after is None:
            return None
        if save(store, after, version):
            return before, after
    raise RetryableError(f"virtual book {account_id}:{market}:{symbol} kept changing under us")


def share_funding(store, book: vp.VirtualBook, until_ms: int | None = None) -> vp.VirtualBook:
    """Book the account's funding settlements of the book's symbol not booked yet (up to ``until_ms``)."""
    where = {"account": book.account_id, "symbol": book.symbol,
             "funding_time": (">=", max(0, book.funding_cursor - FUNDING_SLACK_MS))}
    rows = sorted(store.query(FUNDING_RECORDS, where), key=lambda r: (int(r["funding_time"]), str(r.get("tran_id"))))
    for row in rows:
        t = int(row["funding_time"])
        if until_ms is not None and t > until_ms:
            break
        tran = str(row.get("tran_id") or f"{book.symbol}:{t}")
        book, _ = vp.book_funding(book, tran_id=tran, amount=_d(row.get("amount_usdt")), ts=t)
    return book


# --- fills --------------------------------------------------------------------------------------------


def _report_lock(env: Envelope) -> str | None:
    rep: VenueReport = env.payload
    if rep.exec_type not in BOOKED_EXECS or rep.market != "FUT":
        return None  # nothing to book: no lock round trip
    return keys.lock_vpos(env.account_id or "main", rep.market, rep.symbol)


def on_report(env: Envelope, ctx: Context) -> list[Emit]:
    rep: VenueReport = env.payload
    if rep.exec_type not in BOOKED_EXECS or rep.market != "FUT" or not rep.last_qty or not rep.trade_id:
        return []
    if rep.position_side not in vp.POSITION_SIDES or rep.side not in ("BUY", "SELL") or rep.last_qty < 0:
        raise PermanentError(f"venue report {rep.trade_id} of {rep.client_order_id!r}: position_side "
                             f"{rep.position_side!r} (BOTH|LONG|SHORT), side {rep.side!r} (BUY|SELL), last_qty "
                             f"{rep.last_qty} (> 0): cannot book it")
    account = env.account_id or "main"
    att = attribution.attribute(ctx.store, rep.client_order_id, ctx.services.setdefault("vpos.attribution", {}))
    if att.account_id and att.account_id != account:
        # S4 sent it for another account, yet this account's stream reported it: book it where it
        # happened (the invariant is per venue account) and say so.
        logger.warning("fill {} of {} reported on account {} but sent for {}", rep.trade_id,
                       rep.client_order_id, account, att.account_id)

    forced = is_forced_close(rep)
    fill = dict(trade_id=str(rep.trade_id), side=rep.side, qty=rep.last_qty, price=rep.last_price, fee=rep.commission,
                fee_asset=rep.commission_asset or "USDT", position_side=rep.position_side, ts=rep.ts)

    def step(book: vp.VirtualBook) -> vp.VirtualBook | None:
        book = share_funding(ctx.store, book, until_ms=rep.ts)
        if forced:  # the venue closed the account's position: every holder loses its share
            book, booked = vp.book_forced_close(book, **fill)
        else:
            book, booked = vp.book_fill(book, strategy=att.strategy, **fill)
        return book if booked else None

    got = change(ctx.store, account, rep.symbol, step)
    if got is None:
        return []
    why = "venue's forced close, shared pro rata" if forced else att.why
    return _unassigned_news(ctx, *got, cause=f"fill {rep.trade_id} of {rep.client_order_id or '-'} ({why})")


# --- reconcile ----------------------------------------------------------------------------------------


def interval_ms(ctx: Context) -> int:
    return int(ctx.config.param("virtual", "reconcile_ms", DEFAULT_RECONCILE_MS))


def accounts(ctx: Context) -> list[str]:
    """``virtual.accounts`` of the bundle, else every enabled account of the accounts file."""
    got = ctx.config.param("virtual", "accounts", [])
    if got:
        return [str(a) for a in got]
    s = ctx.settings
    if s is None:
        return ["main"]
    from chimera.venues.accounts import load_accounts

    return [a.account_id for a in load_accounts(getattr(s, "accounts_file", None) or None,
                                                getattr(s, "venue", "paper")) if a.enabled] or ["main"]


def next_reconcile(ctx: Context, account_id: str) -> list[Emit]:
    every = interval_ms(ctx)
    if every <= 0:
        return []
    due = ctx.now_ms() + every
    return [Emit(keys.VPOS_COMMANDS, Reconcile(scope="POSITIONS", requested_by="vpos:periodic"),
                 f"vpos:reconcile:{account_id}:{due}", account_id, event_time=due, due_ms=due,
                 timer_key=keys.vpos_reconcile_timer(account_id))]


def on_start(ctx: Context) -> list[Emit]:
    out: list[Emit] = []
    for account_id in accounts(ctx):
        out += next_reconcile(ctx, account_id)
        out.append(Emit(keys.VPOS_COMMANDS, Reconcile(scope="POSITIONS", requested_by="vpos:startup"),
                        f"vpos:reconcile:{account_id}:startup:{ctx.consumer}:{ctx.now_ms()}", account_id))
    return out


def _sides(rows: list[dict]) -> dict[str, dict[str, tuple[Decimal, Decimal]]]:
    """``positionRisk`` rows -> symbol -> position side -> (signed amount, entry price)."""
    out: dict[str, dict[str, tuple[Decimal, Decimal]]] = {}
    for row in rows:
        side = str(row.get("positionSide") or "BOTH")
        out.setdefault(row["symbol"], {})[side] = (_d(row.get("positionAmt")), _d(row.get("entryPrice")))
    return out


def last_trade_id(fut, symbol: str) -> int:
    """The account's newest trade id on ``symbol`` (``userTrades`` limit 1; 0 when it has none)."""
    try:
        rows = fut.api.account_trade_list(symbol=symbol, limit=1).data()
    except Exception as exc:  # noqa: BLE001 - any venue trouble: the timer comes round again
        raise RetryableError(f"userTrades {symbol}: {exc}") from exc
    rows = [r if isinstance(r, dict) else r.to_dict() for r in rows]
    return max((int(r.get("id") or 0) for r in rows), default=0)


def read_venue(fut, symbol: str) -> tuple[dict[str, tuple[Decimal, Decimal]], int] | None:
    """The symbol's position sides and the newest trade they include, or None when a trade landed during
    the read (which side of it the quantity is on is unknown: the next run will see)."""
    before = last_trade_id(fut, symbol)
    sides = _sides(fut.position_risk(symbol)).get(symbol, {})
    return (sides, before) if last_trade_id(fut, symbol) == before else None


def reconcile_book(ctx: Context, account_id: str, symbol: str, fut) -> list[Emit]:
    reading = read_venue(fut, symbol)
    if reading is None:
        logger.info("vpos reconcile {} {}: a trade landed during the read; next run", account_id, symbol)
        return []
    sides, last_trade = reading

    def step(book: vp.VirtualBook) -> vp.VirtualBook | None:
        return vp.reconcile(share_funding(ctx.store, book), sides, last_trade, ctx.now_ms())[0]

    got = change(ctx.store, account_id, symbol, step)
    return [] if got is None else _unassigned_news(ctx, *got, cause="reconcile")


def on_reconcile(env: Envelope, ctx: Context) -> list[Emit]:
    account = env.account_id or "main"
    periodic = env.payload.requested_by == "vpos:periodic"
    out = next_reconcile(ctx, account) if periodic else []
    try:
        fut = ctx.venues.get(account).fut
        held = {s for s, sides in _sides(fut.position_risk()).items() if any(v[0] for v in sides.values())}
        books = {d["symbol"] for d in ctx.store.query(VIRTUAL_BOOKS, {"account_id": account, "market": "FUT"})}
        for symbol in sorted(held | books):
            out += reconcile_book(ctx, account, symbol, fut)
    except RetryableError as exc:
        if not env.payload.requested_by.startswith("vpos:"):
            raise  # asked for by someone else: the runtime retries it, then dead-letters with the reason
        # Our own runs (periodic, at start-up) are followed by the next periodic one: a failed run says so
        # and leaves the retry to it, instead of retrying into a dead letter while the venue is failing.
        logger.warning("vpos reconcile {} failed: {}; next run in {} ms", account, exc, interval_ms(ctx))
        out.append(Emit(keys.ALERTS, Alert(level="WARN", code="VIRTUAL_RECONCILE_FAILED",
                                           message=f"virtual positions of {account} not reconciled: {exc}",
                                           context={"account_id": account}), f"{env.idempotency_key}:failed", account))
    return out


def _unassigned_news(ctx: Context, before: vp.VirtualBook, after: vp.VirtualBook, cause: str) -> list[Emit]:
    """An event and an alert when the book's UNASSIGNED quantity of a side changed."""
    was, now = vp.unassigned(before), vp.unassigned(after)
    out: list[Emit] = []
    for side in sorted(set(was) | set(now)):
        a, b = was.get(side, vp.ZERO), now.get(side, vp.ZERO)
        if a == b:
            continue
        detail = {"account_id": after.account_id, "symbol": after.symbol, "position_side": side,
                  "unassigned_qty": str(b), "was": str(a), "venue_qty": str(after.venue_qty.get(side, "")),
                  "cause": cause}
        key = f"vpos:unassigned:{after.key}:{side}:{after.version + 1}"
        out.append(Emit(keys.OPS_EVENTS, OpsEvent(kind="VIRTUAL_UNASSIGNED", actor="vpos", detail=detail), key,
                        after.account_id))
        out.append(Emit(keys.ALERTS, Alert(level="WARN" if b else "INFO", code="VIRTUAL_UNASSIGNED",
                                           message=f"{after.account_id} {after.symbol} {side}: {b} held that no "
                                                   f"strategy explains (was {a}; {cause})", context=detail),
                        f"{key}:alert", after.account_id))
    return out


def _streams(_settings) -> list[str]:
    return [keys.VENUE_REPORTS, keys.VPOS_COMMANDS]


SPEC = HandlerSpec(
    role="vpos", streams=_streams, on_start=on_start,
    routes={
        VenueReport: Route(on_report, lock=_report_lock),
        Reconcile: Route(on_reconcile, lock=lambda env: keys.lock_vpos(env.account_id or "main", "FUT", "*")),
    },
    description="virtual positions: fills attributed to strategies by client order id, UNASSIGNED, "
                "reconciled against the venue")
