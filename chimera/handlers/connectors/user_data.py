"""S1 user data for one account: listenKey → the SDK's user-data stream → VenueReport / funding_records.

* ``POST /fapi/v1/listenKey`` at start; ``PUT`` every ``keepalive_s`` (Binance: 30 min; configurable
  through ``settings.extra["user_data"]["keepalive_s"]``) on a keep-alive thread.
* The SDK (``websocket_streams.create_connection()`` + ``user_data(listenKey)``) runs on its own asyncio
  loop; its callback only enqueues. One publisher thread handles frames in arrival order.
* ``ORDER_TRADE_UPDATE`` → ``VenueReport`` on ``venue:{reports}`` (envelope ``account_id`` = the account,
  idempotency key ``vr:<account>:<order id>:t:<trade id>`` for trades, ``...:x:<exec>:<status>`` otherwise).
  A report whose member is already in ``s1:{seen}:<account>`` is dropped (duplicates de-duplicated by
  trade id, also across reconnects / restarts).
* ``ACCOUNT_UPDATE`` reason ``FUNDING_FEE`` → the FUNDING_FEE income rows since the account's cursor
  (``s1:{funding}:cursor:<account>``) become ``funding_records/<account>:<tranId>`` (insert-if-absent:
  idempotent), with the rate from the funding-rate history when the venue has it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from loguru import logger

from chimera.handlers.connectors.sdk_loop import LoopThread
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance import user_data as ud

FUNDING_RECORDS = "funding_records"
KEEPALIVE_S = 30 * 60
FUNDING_LOOKBACK_MS = 60 * 60 * 1000


class UserDataConnector:
    def __init__(self, *, r, clock, store, ws_url: str, rest, account_id: str, keepalive_s: float = KEEPALIVE_S,
                 reconnect_delay_ms: int = 500, on_status: Callable[[str, str], None] | None = None) -> None:
        self.r = r
        self.clock = clock
        self.store = store
        self.producer = Producer(r, clock)
        self.ws_url = ws_url
        self.rest = rest
        self.account_id = account_id
        self.keepalive_s = keepalive_s
        self.reconnect_delay_ms = reconnect_delay_ms
        self.on_status = on_status or (lambda status, err: None)
        self.q: queue.Queue = queue.Queue()
        self.listen_key = ""
        self.published = 0
        self.duplicates = 0
        self.keepalives = 0
        self.funding_written = 0
        self._conn = None
        self._loop: LoopThread | None = None
        self._stop = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
            ConfigurationWebSocketStreams,
            DerivativesTradingUsdsFutures,
        )

        self.on_status("CONNECTING", "")
        self.listen_key = ud.create_listen_key(self.rest)
        self._loop = LoopThread(f"s1-ud-{self.account_id}")
        cfg = ConfigurationWebSocketStreams(stream_url=self.ws_url, reconnect_delay=self.reconnect_delay_ms)
        client = DerivativesTradingUsdsFutures(config_ws_streams=cfg).websocket_streams

        async def go():
            conn = await client.create_connection()
            stream = await conn.user_data(self.listen_key)
            stream.on("message", lambda m: self.q.put(m))
            return conn

        self._conn = self._loop.run(go())
        self.on_status("CONNECTED", "")
        self._loop.spawn(self._publisher, f"s1-ud-publish-{self.account_id}")
        self._loop.spawn(self._keepalive, f"s1-ud-keepalive-{self.account_id}")

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.shutdown(self._stop, self._conn, "s1 user data")
        try:
            if self.listen_key:
                ud.close_listen_key(self.rest)
        except Exception as exc:  # noqa: BLE001 - the key expires on its own
            logger.debug("s1 listenKey close: {}", exc)

    # --- threads ---------------------------------------------------------------------------------------

    def _keepalive(self) -> None:
        while not self._stop.wait(self.keepalive_s):
            try:
                ud.keepalive_listen_key(self.rest)
                self.keepalives += 1
            except Exception as exc:  # noqa: BLE001 - retried at the next period; status shows it
                logger.error("s1 listenKey keep-alive for {} failed: {}", self.account_id, exc)
                self.on_status("CONNECTED", f"listenKey keep-alive failed: {exc}")

    def _publisher(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.q.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                self.process(ud.frame_to_dict(msg))
            except Exception as exc:  # Redis/REST trouble: log, keep the loop alive
                logger.exception("s1 user data {}: {}", self.account_id, exc)
                self._stop.wait(0.2)

    # --- one frame -------------------------------------------------------------------------------------

    def process(self, d: dict) -> None:
        if d.get("e") == "ORDER_TRADE_UPDATE":
            self.publish_report(d)
        elif ud.is_funding_update(d):
            self.sync_funding(int(d.get("E") or d.get("T") or self.clock.now_ms()))

    def publish_report(self, d: dict) -> bool:
        rep = ud.normalize_order_update(d)
        member = ud.dedupe_member(rep)
        seen = keys.s1_seen_trade(self.account_id)
        if self.r.sismember(seen, member):
            self.duplicates += 1
            return False
        self.producer.publish(keys.VENUE_REPORTS, rep, f"vr:{self.account_id}:{member}", self.account_id,
                              event_time=rep.ts)
        self.r.sadd(seen, member)
        self.published += 1
        return True

    def sync_funding(self, event_ms: int) -> int:
        cursor_key = keys.s1_funding_cursor(self.account_id)
        raw = self.r.get(cursor_key)
        start = int(raw) if raw else event_ms - FUNDING_LOOKBACK_MS
        written = 0
        while True:
            before = start
            rows = ud.funding_income(self.rest, start)
            for row in rows:
                t = int(row["time"])
                doc = {"account": self.account_id, "symbol": row["symbol"], "funding_time": t,
                       "amount_usdt": str(ud.D(row["income"])), "asset": row.get("asset", "USDT"),
                       "tran_id": str(row.get("tranId", "")),
                       "rate": None}
                if self.store.get(FUNDING_RECORDS, f"{self.account_id}:{doc['tran_id']}") is None:
                    rate = ud.funding_rate_at(self.rest, row["symbol"], t)
                    doc["rate"] = None if rate is None else str(rate)
                    if self.store.insert_if_absent(FUNDING_RECORDS, f"{self.account_id}:{doc['tran_id']}", doc):
                        written += 1
                start = max(start, t)
            if len(rows) < 1000 or start == before:
                break
        self.r.set(cursor_key, start)
        self.funding_written += written
        return written
