"""S1 role entry: ``SPEC = run``, a role with its own loop (``chimera-worker --role s1``).

``run(settings, stop_event)``:

* accounts from ``settings.accounts_file`` (``load_accounts``); disabled accounts are skipped,
  logged, and get ``ws_status=DISABLED`` (status hash ``s1:{status}:<account>`` + an
  ``AccountStreamStatus`` event on ops:events, seed 000);
* market data for ``settings.symbols`` through the main account's client pool
  (``MarketDataConnector``; market streams need no key); its CONNECTING / CONNECTED /
  DISCONNECTED transitions update the main account's status;
* the treasury handler (``treasury.SPEC``) runs in a consumer-group worker thread of this role;
* user data (listenKey → VenueReport, funding settlements → funding_records) is NOT built yet:
  with ``settings.extra["user_data"]`` set, ``start_user_data`` raises ``NotYetImplemented``.
"""

from __future__ import annotations

import threading

from loguru import logger

from chimera.schemas.messages import AccountStreamStatus
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.accounts import Account, load_accounts

BINANCE_URLS = {
    "testnet": ("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com"),
    "live": ("https://fapi.binance.com", "wss://fstream.binance.com"),
}


def endpoints(settings) -> tuple[str, str]:
    """(REST base, futures WebSocket streams base) for the venue."""
    if settings.venue == "paper":
        base = settings.venue_url.rstrip("/")
        return base, base.replace("http://", "ws://").replace("https://", "wss://") + "/futures"
    return BINANCE_URLS[settings.venue]


class StatusBoard:
    """Per-account stream status: a Redis hash (for the gateway) + an event on each change."""

    def __init__(self, r, clock) -> None:
        self.r = r
        self.clock = clock
        self.producer = Producer(r, clock)
        self.last: dict[str, str] = {}

    def set(self, account_id: str, status: str, error: str = "") -> None:
        now = self.clock.now_ms()
        fields = {"ws_status": status, "last_error": error, "updated_at": now}
        if status == "CONNECTED":
            fields["last_connected_at"] = now
        self.r.hset(keys.s1_stream_status(account_id), mapping=fields)
        if self.last.get(account_id) == status and not error:
            return
        self.last[account_id] = status
        connected = int(self.r.hget(keys.s1_stream_status(account_id), "last_connected_at") or 0)
        self.producer.publish(keys.OPS_EVENTS, AccountStreamStatus(ws_status=status, last_error=error,
                                                                   last_connected_at=connected),
                              f"stream_status:{account_id}:{status}:{now}", account_id)


def start_user_data(account: Account, settings) -> None:
    from chimera.workers.errors import NotYetImplemented

    raise NotYetImplemented(
        f"S1 user data for account {account.account_id} (listenKey keep-alive, VenueReport de-duplicated by "
        "trade id, funding settlements to funding_records) is not implemented yet (issue #4 remainder)")


def run(settings, stop: threading.Event) -> None:
    from chimera.handlers.connectors import treasury
    from chimera.handlers.connectors.market import MarketDataConnector
    from chimera.handlers.features.role import reference_symbol
    from chimera.ops.bootstrap import clock_from, redis_from, stores_from
    from chimera.venues.binance.market_data import futures_rest
    from chimera.workers.runtime import Worker

    r = redis_from(settings)
    clock = clock_from(settings)
    board = StatusBoard(r, clock)
    accounts = load_accounts(settings.accounts_file, settings.venue)
    enabled = [a for a in accounts if a.enabled]
    for a in accounts:
        if not a.enabled:
            logger.info("s1: account {} is disabled; its streams are not opened", a.account_id)
            board.set(a.account_id, "DISABLED")
    extra = getattr(settings, "extra", None) or {}
    if extra.get("user_data"):
        for a in enabled:
            start_user_data(a, settings)
    else:
        logger.warning("s1: user-data streams are not implemented yet; only market data and treasury run")
    rest_base, ws_base = endpoints(settings)
    main = next(a for a in enabled if a.account_id == "main")
    market = MarketDataConnector(
        r=r, clock=clock, ws_url=ws_base, rest=futures_rest(rest_base, main.api_key, main.api_secret),
        symbols=list(settings.symbols), reference=reference_symbol(settings),
        on_status=lambda status, err: board.set(main.account_id, status, err))
    store, objects = stores_from(settings)
    consumer = settings.consumer or "s1"
    tw = Worker(treasury.SPEC, r, settings=settings, store=store, objects=objects, clock=clock,
                consumer=f"{consumer}-treasury", services={})
    tw_thread = threading.Thread(target=tw.run, name="s1-treasury", daemon=True)
    try:
        market.start()
        tw_thread.start()
        stop.wait()
    finally:
        tw.stop()
        market.stop()
        tw_thread.join(10)
        board.set(main.account_id, "DISCONNECTED", "stopped")


SPEC = run
