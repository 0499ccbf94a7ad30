"""S1 user data for one account and market (FUT: USDT-M futures, SPOT): listenKey → the SDK's user-data
stream → VenueReport / funding_records, with keep-alive, expiry handling and a REST catch-up.

* ``POST`` a listenKey at start; ``PUT`` it every ``keepalive_s`` (Binance: 30 min, a key expires 60
  min after its last keep-alive) on a keep-alive thread.
* The SDK (``create_connection()`` + ``user_data(listenKey)``) runs on its own asyncio loop; its callbacks
  only enqueue. One publisher thread handles frames and renewals in order, so every report goes through
  the same de-duplication.
* ``ORDER_TRADE_UPDATE`` / ``executionReport`` → ``VenueReport`` on ``venue:{reports}`` (envelope
  ``account_id`` = the account, idempotency key ``vr:<account>:<market>:<symbol>:<order id>:t:<trade id>`` for trades,
  ``...:x:<exec>:<status>`` otherwise). A report whose identity (market, symbol, member) was published
  within ``seen_window_ms`` (``s1:{seen}:window:<account>``, a ZSET scored by publish time, trimmed on
  every write) is dropped (duplicates de-duplicated by trade id, also across reconnects / restarts /
  catch-ups). The window (default 8 days) must exceed the catch-up's reach: REST returns 7 days of fills.
* Start: the listenKey POST and the connect are tried once; a rejected API key (401/403) is a
  ``FatalError`` (S1 exits with the fix); any other failure (the venue refused or dropped the socket, a
  5xx) leaves the status DISCONNECTED and hands over to the renewal below, which retries with backoff.
* Expiry: a ``listenKeyExpired`` event, or a failed keep-alive, renews the stream: a new key (retried
  with the backoff of ``backoff.py``), a new SDK connection subscribed to it (the old one closed), then the catch-up. An SDK
  reconnect (the socket dropped and came back) runs the catch-up alone.
* Catch-up (REST), at start (a restart after a crash) and after every renewal or reopened socket, retried
  until it gets through: open orders → their NEW report; fills since the last event seen (minus a margin) of
  the configured symbols, the symbols seen on the stream and those of open orders → the TRADE report
  the stream would have sent (order read back for its client id, type and status). De-duplicated like
  the stream, so nothing is published twice and no fill is lost while disconnected. Cancels and
  expiries missed meanwhile are not read back here: S5's reconciliation covers them.
  The fills are read in pages of 1,000 (Binance's largest), from the time of the last event, then onward by
  trade id (``fromId``) until a page comes back short, so a long outage with more fills than one page loses none. The last event's time is kept in Redis
  (``s1_event_cursor``, written with each report's seen mark), so a restarted S1 reads from there; a process's
  first catch-up also reads the latest page, whether its first connect worked or not (a venue whose clock
  went back, e.g. a replay started over, has fills before the cursor). A report that cannot be published
  (Redis down past the retry policy) queues a catch-up instead of being dropped. While a gap (a start, a
  dropped or renewed stream, a failed publish) is not read back, its start (``gap_from``) holds: the
  catch-up reads from there however many later frames arrive first, and the stored cursor does not pass it.
* FUT ``ACCOUNT_UPDATE`` reason ``FUNDING_FEE`` → the FUNDING_FEE income rows since the account's cursor
  (``s1:{funding}:cursor:<account>``) become ``funding_records/<account>:<tranId>`` (insert-if-absent:
  idempotent), with the rate from the funding-rate history when the venue has it; each new one also goes to
  S6 as a settled ``FundingEvent`` on ``pos:{commands}`` (the positions that held it carry it), published
  before its record is written. Every catch-up syncs them too (a settlement's frame lost in a gap).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

from loguru import logger

from chimera.errors import FatalError
from chimera.feeds.backoff import Backoff, is_auth_error
from chimera.feeds.market import close_quietly, sdk_streams_client
from chimera.feeds.sdk_loop import LoopThread
from chimera.schemas.messages import FundingEvent, OpsEvent, VenueReport
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance import user_data as ud
from chimera.venues.binance import user_rest
from chimera.venues.binance.user_rest import TRADES_PAGE

FUNDING_RECORDS = "funding_records"
KEEPALIVE_S = 30 * 60
FUNDING_LOOKBACK_MS = 60 * 60 * 1000
CATCHUP_MARGIN_MS = 60_000  # fills read back from this long before the last event seen
SEEN_WINDOW_MS = 8 * 24 * 3600 * 1000  # > the 7 days of fills a catch-up without a start time reads back


class UserDataConnector:
    def __init__(self, *, r, clock, store, ws_url: str, rest, account_id: str, market: str = "FUT",
                 symbols: Iterable[str] = (), keepalive_s: float = KEEPALIVE_S, reconnect_delay_ms: int = 500,
                 on_status: Callable[[str, str], None] | None = None, seen_window_ms: int = SEEN_WINDOW_MS) -> None:
        if market not in ("FUT", "SPOT"):
            raise ValueError(f"market must be FUT or SPOT, not {market!r}")
        self.r = r
        self.clock = clock
        self.store = store
        self.producer = Producer(r, clock)
        self.ws_url = ws_url
        self.rest = rest
        self.api = user_rest.user_rest(market, rest)
        self.market = market
        self.account_id = account_id
        self.symbols = {s.upper() for s in symbols}  # read back by the catch-up, with those seen since
        self.keepalive_s = keepalive_s
        self.reconnect_delay_ms = reconnect_delay_ms
        self.on_status = on_status or (lambda status, err: None)
        self.seen_key = keys.s1_seen_window(account_id)
        self.cursor_key = keys.s1_event_cursor(account_id, market)
        self.trades_page = TRADES_PAGE
        self.seen_window_ms = seen_window_ms
        self.q: queue.Queue = queue.Queue()
        self.listen_key = ""
        self.last_event_ms = 0
        # Where fills may be missing and not read back yet: the last event's time when a gap opened (a
        # start, a dropped or renewed stream, a report that could not be published), cleared once a
        # catch-up got through. Frames arriving before that catch-up move neither its start nor the stored
        # cursor past the gap: they did, and a catch-up retried after them read from the newest frame on,
        # missing the gap's fills (the chaos drill's books lacked their commissions; CI run 50).
        self.gap_from: int | None = None
        self.caught_up_once = False  # the first catch-up of a process also reads the latest page
        self.duplicates = 0
        self.keepalives = 0
        self.renewals = 0
        self._client = None
        self._loop: LoopThread | None = None
        self._stop = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self.on_status("CONNECTING", "")
        self.r.unlink(keys.s1_seen_trade(self.account_id))  # the legacy unbounded set: replaced by the window
        self.last_event_ms = int(self.r.get(self.cursor_key) or 0)
        self.gap_from = self.last_event_ms  # whatever happened while no S1 listened
        self._loop = LoopThread(f"s1-ud-{self.market}-{self.account_id}")
        try:
            self.listen_key = self.api.create_key()
            self._open(self.listen_key)
        except Exception as exc:
            if is_auth_error(exc):
                self._loop.stop()
                raise FatalError(f"s1 user data {self.market} {self.account_id}: the venue rejected the API key "
                                 f"({exc}); fix api_key / api_secret of {self.account_id!r} in the accounts "
                                 "file (CHIMERA_ACCOUNTS_FILE)") from exc
            logger.warning("s1 user data {} {}: connecting at start failed ({}); retrying",
                           self.market, self.account_id, exc)
            self.on_status("DISCONNECTED", f"connect failed: {exc}")
            self.q.put(("renew", f"connect at start failed: {exc}"))
        else:
            self.on_status("CONNECTED", "")
            # What happened while no S1 was listening (a restart after a crash): the seen-window in Redis
            # keeps this from publishing anything twice.
            self.q.put(("catch_up", "start"))
        self._loop.spawn(self._publisher, f"s1-ud-publish-{self.market}-{self.account_id}")
        self._loop.spawn(self._keepalive, f"s1-ud-keepalive-{self.market}-{self.account_id}")

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.shutdown(self._stop, self._client, "s1 user data")
        try:
            if self.listen_key:
                self.api.close(self.listen_key)
        except Exception as exc:  # noqa: BLE001 - the key expires on its own
            logger.debug("s1 listenKey close: {}", exc)

    def _open(self, key: str) -> None:
        """A new SDK connection subscribed to ``key``; the previous one, if any, is closed after."""
        assert self._loop is not None
        client = sdk_streams_client("spot" if self.market == "SPOT" else "perp", self.ws_url, self.reconnect_delay_ms)

        async def go():
            conn = await client.create_connection()
            if conn is None:  # the SDK logs a refused connect and hands back nothing
                await close_quietly(client)
                raise ConnectionError(f"WebSocket connect to {self.ws_url} failed")
            try:
                stream = await conn.user_data(key)
            except BaseException:
                await close_quietly(client)
                raise
            stream.on("message", lambda m: self.q.put(("frame", m)))
            conn.on_connection("reconnect", lambda *_: self.q.put(("catch_up", "user-data socket reconnected")))
            # The SDK reconnects only on its own schedule or a serverShutdown event: a socket the venue
            # or the network closes stays closed, and every report after it would be lost. The
            # publisher opens a new one (and catches up) unless this one was already replaced.
            conn.on_connection("close", lambda *_: self.q.put(("closed", conn)))
            return conn

        old, self._client = self._client, self._loop.run(go())
        if old is not None:
            try:
                self._loop.run(old.close_connection(close_session=True), timeout=5)
            except Exception as exc:  # noqa: BLE001 - a dead socket: nothing to close
                logger.debug("s1 user data: closing the previous connection: {}", exc)

    # --- threads ---------------------------------------------------------------------------------------

    def _keepalive(self) -> None:
        while not self._stop.wait(self.keepalive_s):
            self.keepalive_once()

    def keepalive_once(self) -> bool:
        """PUT the key; when that fails (the key may be gone), the publisher renews the stream."""
        try:
            self.api.keepalive(self.listen_key)
            self.keepalives += 1
            return True
        except Exception as exc:  # noqa: BLE001 - the key may be gone: renew it
            logger.error("s1 listenKey keep-alive for {} {} failed: {}", self.market, self.account_id, exc)
            self.q.put(("renew", f"listenKey keep-alive failed: {exc}"))
            return False

    def _publisher(self) -> None:
        while not self._stop.is_set():
            try:
                kind, item = self.q.get(timeout=0.05)
            except queue.Empty:
                continue
            if kind != "frame":  # every frame queued before this item came before the gap; those after, after
                self._gap_opens()
            try:
                if kind == "frame":
                    self.process(ud.frame_to_dict(item))
                elif kind == "renew":
                    self.renew(item)
                elif kind == "closed":
                    if item is self._client and not self._stop.is_set():
                        self.renew("user-data socket closed", reopen=True)
                else:
                    self.catch_up(item)
            except Exception as exc:  # Redis/REST trouble: log, keep the loop alive
                logger.exception("s1 user data {} {}: {}", self.market, self.account_id, exc)
                if kind == "catch_up":  # a 5xx mid-way: the fills it did not read are still missing
                    self.q.put((kind, item))
                elif kind == "frame":  # its report is not out: read it back rather than drop it
                    self._gap_opens()  # at this frame's time: the read-back starts before it
                    self.q.put(("catch_up", f"a report could not be published: {exc}"))
                self._stop.wait(0.2)

    # --- one frame -------------------------------------------------------------------------------------

    def process(self, d: dict) -> None:
        self.last_event_ms = max(self.last_event_ms, int(d.get("E") or 0))
        if ud.is_listen_key_expired(d):
            self.renew("listenKeyExpired")
            return
        rep = ud.normalize_user_event(d)
        if rep is not None:
            self.symbols.add(rep.symbol)
            self.publish(rep)
        elif self.market == "FUT" and ud.is_funding_update(d):
            self.sync_funding(int(d.get("E") or d.get("T") or self.clock.now_ms()))

    def publish(self, rep: VenueReport) -> bool:
        """XADD unless already published (by trade id / exec+status); True when it went out."""
        member = ud.dedupe_member(rep)
        if self.seen(rep.symbol, member):
            self.duplicates += 1
            return False
        self.producer.publish(keys.VENUE_REPORTS, rep, f"vr:{self.account_id}:{rep.market}:{rep.symbol}:{member}", self.account_id,
                              event_time=rep.ts)
        self.remember(rep.symbol, member)
        return True

    def seen(self, symbol: str, member: str) -> bool:
        return self.r.zscore(self.seen_key, ud.seen_member(self.market, symbol, member)) is not None

    def remember(self, symbol: str, member: str) -> None:
        now = self.clock.now_ms()
        pipe = self.r.pipeline(transaction=False)  # one {seen} slot
        pipe.zadd(self.seen_key, {ud.seen_member(self.market, symbol, member): now})
        pipe.zremrangebyscore(self.seen_key, "-inf", f"({now - self.seen_window_ms}")
        cursor = self._handled_to()  # a restart reads fills from there on
        if cursor:
            pipe.set(self.cursor_key, cursor)
        pipe.execute()

    # --- expiry and catch-up -----------------------------------------------------------------------------

    def renew(self, reason: str, reopen: bool = False) -> None:
        """A new listenKey (the old one expired or its keep-alive failed), a new connection, the catch-up.

        ``reopen``: the socket closed under us; a new connection even if the venue hands back the same key.
        """
        self.renewals += 1
        self._gap_opens()  # also when a frame (listenKeyExpired) asked: the new socket's frames come after
        self.on_status("CONNECTING", reason)
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                key = self.api.create_key()
                if reopen or key != self.listen_key or self._client is None:
                    self._open(key)
                self.listen_key = key
                break
            except Exception as exc:  # noqa: BLE001 - the venue is unreachable: keep trying
                delay = backoff.next()
                logger.warning("s1 user data {} {}: renewing the stream failed ({}); retry in {}s",
                               self.market, self.account_id, exc, delay)
                why = "the venue rejected the API key: fix it in the accounts file" if is_auth_error(exc) else ""
                self.on_status("DISCONNECTED", f"renewing the user-data stream failed: {exc} {why}".strip())
                self._stop.wait(delay)
        else:
            return
        try:
            n = self.catch_up(reason)
        except Exception as exc:  # noqa: BLE001 - the stream is back; the reads are retried on their own
            logger.warning("s1 user data {} {}: catch-up failed ({}); retrying", self.market, self.account_id, exc)
            self.q.put(("catch_up", reason))
            n = 0
        self.producer.publish(keys.OPS_EVENTS, OpsEvent(kind="USER_STREAM_RENEWED", actor="s1", detail={
            "market": self.market, "reason": reason, "reports_caught_up": str(n)}),
            f"USER_STREAM_RENEWED:{self.market}:{self.account_id}:{self.renewals}", self.account_id)
        self.on_status("CONNECTED", "")

    def _gap_opens(self) -> None:
        """Fills from the last event on may be missing: the next catch-up that gets through reads from here."""
        if self.gap_from is None:
            self.gap_from = self.last_event_ms

    def _handled_to(self) -> int:
        """Every event up to this time is handled: the last event's, or where a gap not read back began
        (``gap_from`` is never later: it is taken from ``last_event_ms``, which only grows)."""
        return self.last_event_ms if self.gap_from is None else self.gap_from

    def catch_up(self, reason: str) -> int:
        """Publish, from REST, what the stream may have missed: NEW of open orders, fills since the last
        event. Returns the reports that went out (the rest were already published)."""
        open_orders = self.api.open_orders()
        n = sum(self.publish(ud.new_report(self.market, o)) for o in sorted(open_orders, key=lambda o: o["orderId"]))
        start = self._handled_to()
        since = start - CATCHUP_MARGIN_MS if start else None
        for symbol in sorted(self.symbols | {o["symbol"] for o in open_orders}):
            # A process's first catch-up, whether its first connect worked or not, reads the latest page too.
            n += self._catch_up_fills(symbol, since, latest=not self.caught_up_once)
        if self.market == "FUT" and start:  # a settlement whose ACCOUNT_UPDATE was lost in the gap
            # From the venue's event time only: this process's clock may be the wall clock while the venue
            # replays history, and a cursor set from it would skip every settlement before it.
            self.sync_funding(start)
        self.gap_from, self.caught_up_once = None, True
        logger.info("s1 user data {} {} caught up {} report(s) after: {}", self.market, self.account_id, n, reason)
        return n

    def _fills(self, symbol: str, since: int | None, latest: bool) -> list[dict]:
        """The fills of ``symbol`` from ``since`` on, page after page (the latest page alone without
        ``since``; with ``latest`` that page too), oldest first, each once. After the first page the next
        starts at the trade id after its last (``fromId``): many fills can share one millisecond."""
        rows: dict[int, dict] = {}
        if latest or since is None:
            rows.update((int(t["id"]), t) for t in self.api.trades(symbol, None, limit=self.trades_page))
        page = self.api.trades(symbol, since, limit=self.trades_page) if since is not None else []
        while True:
            rows.update((int(t["id"]), t) for t in page)
            if len(page) < self.trades_page:
                break
            page = self.api.trades(symbol, None, limit=self.trades_page, from_id=max(int(t["id"]) for t in page) + 1)
        return sorted(rows.values(), key=lambda t: (int(t["time"]), int(t["id"])))

    def _catch_up_fills(self, symbol: str, since: int | None, latest: bool = False) -> int:
        trades = self._fills(symbol, since, latest)
        n = 0
        orders: dict[int, dict] = {}
        for i, t in enumerate(trades):
            if self.seen(symbol, ud.trade_member(t["orderId"], t["id"])):
                continue
            oid = int(t["orderId"])
            if oid not in orders:
                orders[oid] = self.api.order(symbol, oid)
                n += self.publish(ud.new_report(self.market, orders[oid]))
            # The order's filled quantity at this fill: what it has now minus the fills after this one.
            later = sum(ud.D(x["qty"]) for x in trades[i + 1:] if int(x["orderId"]) == oid)
            n += self.publish(ud.trade_report(self.market, orders[oid], t, ud.D(orders[oid]["executedQty"]) - later))
        return n

    # --- funding (FUT) -------------------------------------------------------------------------------------

    def publish_funding(self, doc: dict) -> None:
        """S6 puts each settlement on the positions that held it (``positions.money``, complete accounting)."""
        ev = FundingEvent(symbol=doc["symbol"], funding_time=doc["funding_time"], rate=ud.D(doc.get("rate") or 0),
                          settled=True, amount_usdt=ud.D(doc["amount_usdt"]), tran_id=doc["tran_id"])
        self.producer.publish(keys.POS_COMMANDS, ev, f"funding:{self.account_id}:{doc['tran_id']}", self.account_id,
                              event_time=doc["funding_time"])

    def sync_funding(self, event_ms: int) -> int:
        cursor_key = keys.s1_funding_cursor(self.account_id)
        raw = self.r.get(cursor_key)
        start = int(raw) if raw else event_ms - FUNDING_LOOKBACK_MS
        written = 0
        while True:
            before = start
            rows = user_rest.funding_income(self.rest, start)
            for row in rows:
                t = int(row["time"])
                doc = {"account": self.account_id, "symbol": row["symbol"], "funding_time": t,
                       "amount_usdt": str(ud.D(row["income"])), "asset": row.get("asset", "USDT"),
                       "tran_id": str(row.get("tranId", "")),
                       "rate": None}
                if self.store.get(FUNDING_RECORDS, f"{self.account_id}:{doc['tran_id']}") is None:
                    rate = user_rest.funding_rate_at(self.rest, row["symbol"], t)
                    doc["rate"] = None if rate is None else str(rate)
                    # To S6 first, then the record, like a report before its seen mark: a crash in between
                    # publishes it again next time (S6 books a settlement once per position); the other
                    # way round the record said "done" over a settlement S6 never got.
                    self.publish_funding(doc)
                    if self.store.insert_if_absent(FUNDING_RECORDS, f"{self.account_id}:{doc['tran_id']}", doc):
                        written += 1
                start = max(start, t)
            if len(rows) < 1000 or start == before:
                break
        self.r.set(cursor_key, start)
        return written
