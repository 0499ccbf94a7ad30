"""S1 role entry: ``SPEC = run``, a role with its own loop (``chimera-worker --role s1``).

``run(settings, stop_event)``:

* accounts from ``settings.accounts_file`` (``load_accounts``); disabled accounts are skipped,
  logged, and get ``ws_status=DISABLED`` (status hash ``s1:{status}:<account>`` + an
  ``AccountStreamStatus`` event on ops:events, seed 000);
* market data for ``settings.symbols`` through the main account's client pool
  (``MarketDataConnector``; market streams need no key); its CONNECTING / CONNECTED /
  DISCONNECTED transitions update the main account's status;
* the treasury handler (``treasury.SPEC``) runs in a consumer-group worker thread of this role;
* user data per enabled account (``user_data.UserDataConnector``: listenKey + keep-alive, VenueReport on
  venue:{reports} de-duplicated by trade id, FUNDING_FEE → funding_records) when
  ``settings.extra["user_data"]`` is set (``true`` or ``{"keepalive_s": 1800}``).
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


def user_data_config(settings) -> dict:
    """``settings.extra["user_data"]``: ``true`` or ``{"keepalive_s": 1800, "reconnect_delay_ms": 500}``."""
    raw = (getattr(settings, "extra", None) or {}).get("user_data")
    return raw if isinstance(raw, dict) else ({} if raw else {"disabled": True})


def start_user_data(account: Account, settings, *, r, clock, store, board: StatusBoard):
    """Open one account's user-data stream (listenKey, keep-alive, VenueReport, funding_records)."""
    from chimera.handlers.connectors.user_data import KEEPALIVE_S, UserDataConnector
    from chimera.venues.binance.market_data import futures_rest

    cfg = user_data_config(settings)
    rest_base, ws_base = endpoints(settings)
    conn = UserDataConnector(
        r=r, clock=clock, store=store, ws_url=ws_base,
        rest=futures_rest(rest_base, account.api_key, account.api_secret), account_id=account.account_id,
        keepalive_s=float(cfg.get("keepalive_s", KEEPALIVE_S)),
        reconnect_delay_ms=int(cfg.get("reconnect_delay_ms", 500)),
        on_status=lambda status, err: board.set(account.account_id, status, err))
    conn.start()
    return conn


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
    store, objects = stores_from(settings)
    user_streams = []
    if not user_data_config(settings).get("disabled"):
        for a in enabled:
            user_streams.append(start_user_data(a, settings, r=r, clock=clock, store=store, board=board))
    else:
        logger.warning("s1: user-data streams are off (settings.extra['user_data'] not set)")
    rest_base, ws_base = endpoints(settings)
    main = next(a for a in enabled if a.account_id == "main")
    market = MarketDataConnector(
        r=r, clock=clock, ws_url=ws_base, rest=futures_rest(rest_base, main.api_key, main.api_secret),
        symbols=list(settings.symbols), reference=reference_symbol(settings),
        on_status=lambda status, err: board.set(main.account_id, status, err))
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
        for u in user_streams:
            u.stop()
        tw_thread.join(10)
        board.set(main.account_id, "DISCONNECTED", "stopped")


SPEC = run
