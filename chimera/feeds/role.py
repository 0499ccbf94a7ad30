"""S1 role entry: ``SPEC = run``, a role with its own loop (``chimera-worker --role s1``).

``run(settings, stop_event)``:

* accounts from ``settings.accounts_file`` (``load_accounts``); disabled accounts are skipped,
  logged, and get ``ws_status=DISABLED`` (status hash ``s1:{status}:<account>`` + an
  ``AccountStreamStatus`` event on ops:events, seed 000);
* market data for ``settings.symbols`` (perp, the futures SDK) and ``settings.extra["spot_symbols"]``
  (spot, the spot SDK) through the main account's client pool (``MarketDataConnector``, one per market;
  market streams need no key); their CONNECTING / CONNECTED / DISCONNECTED transitions update the main
  account's status of that market (``StatusBoard``: one hash per account and market, plus the account's
  worst in ``s1:{status}:<account>``). A connect that fails at start is retried with backoff (status
  DISCONNECTED + last_error meanwhile); only a rejected API key (401/403) stops S1, with the fix;
* the treasury handler (``treasury.SPEC``) runs in a consumer-group worker thread of this role;
* user data per enabled account and market (FUT, and SPOT when spot symbols are set;
  ``user_data.UserDataConnector``: listenKey + keep-alive + renewal on expiry with a REST catch-up,
  VenueReport on venue:{reports} de-duplicated by trade id, FUNDING_FEE → funding_records) when
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
BINANCE_SPOT_URLS = {
    "testnet": ("https://testnet.binance.vision", "wss://stream.testnet.binance.vision"),
    "live": ("https://api.binance.com", "wss://stream.binance.com:9443"),
}


def endpoints(settings, market: str = "perp") -> tuple[str, str]:
    """(REST base, WebSocket streams base) of the venue for ``market`` (perp: USDT-M futures, or spot)."""
    if settings.venue == "paper":
        base = settings.venue_url.rstrip("/")
        ws = base.replace("http://", "ws://").replace("https://", "wss://")
        return base, ws + ("/spot" if market == "spot" else "/futures")
    return (BINANCE_SPOT_URLS if market == "spot" else BINANCE_URLS)[settings.venue]


def market_config(settings) -> dict:
    """``settings.extra``: ``spot_symbols`` (spot streams, default none) and ``depth_levels`` (top-N
    of the local order books published as DepthLevels, default 20; 0 = no depth streams)."""
    extra = getattr(settings, "extra", None) or {}
    return {"spot_symbols": [s.upper() for s in extra.get("spot_symbols", ())],
            "depth_levels": int(extra.get("depth_levels", 20))}


def start_market(settings, market: str, symbols: list[str], main: Account, *, r, clock, board):
    """One market's streams (MarketDataConnector) through the official SDK of that market."""
    from chimera.feeds.market import MarketDataConnector
    from chimera.handlers.features.toolkit import reference_symbol
    from chimera.venues.binance.market_data import futures_rest, spot_rest

    rest_base, ws_base = endpoints(settings, market)
    rest = (spot_rest if market == "spot" else futures_rest)(rest_base, main.api_key, main.api_secret)
    conn = MarketDataConnector(
        r=r, clock=clock, ws_url=ws_base, rest=rest, symbols=symbols, market=market,
        reference=reference_symbol(settings), depth_levels=market_config(settings)["depth_levels"],
        on_status=lambda status, err: board.set(main.account_id, status, err, market=market))
    conn.start()
    return conn


WORST_FIRST = ("DISCONNECTED", "CONNECTING", "CONNECTED")


class StatusBoard:
    """Stream status per account and market (``keys.S1_STATUS_MARKETS``): one Redis hash each, the
    account's worst market in ``s1:{status}:<account>`` (what the gateway shows as the account's
    ``ws_status``; its ``last_error`` names the markets), and an AccountStreamStatus event on each change."""

    def __init__(self, r, clock) -> None:
        self.r = r
        self.clock = clock
        self.producer = Producer(r, clock)
        self.last: dict[tuple[str, str], str] = {}
        self.markets: dict[str, dict[str, dict]] = {}  # account → market → its hash fields

    def set(self, account_id: str, status: str, error: str = "", market: str = "") -> None:
        """``market`` = one stream of the account; "" = the account as a whole (DISABLED)."""
        now = self.clock.now_ms()
        fields = {"ws_status": status, "last_error": error, "updated_at": now}
        if status == "CONNECTED":
            fields["last_connected_at"] = now
        if market:
            self.r.hset(keys.s1_stream_status_market(account_id, market), mapping=fields)
            self.markets.setdefault(account_id, {}).setdefault(market, {}).update(fields)
            self.r.hset(keys.s1_stream_status(account_id), mapping=self._worst(account_id, now))
        else:
            self.r.hset(keys.s1_stream_status(account_id), mapping=fields)
        if self.last.get((account_id, market)) == status and not error:
            return
        self.last[account_id, market] = status
        connected = int(self.markets.get(account_id, {}).get(market, {}).get("last_connected_at") or 0)
        self.producer.publish(keys.OPS_EVENTS, AccountStreamStatus(ws_status=status, last_error=error,
                                                                   last_connected_at=connected, market=market),
                              f"stream_status:{account_id}:{market}:{status}:{now}", account_id)

    def _worst(self, account_id: str, now: int) -> dict:
        markets = self.markets[account_id]
        status = min((m["ws_status"] for m in markets.values()), key=WORST_FIRST.index)
        errors = [f"{name}: {m['last_error']}" for name, m in sorted(markets.items())
                  if m["ws_status"] != "CONNECTED" and m["last_error"]]
        out = {"ws_status": status, "last_error": "; ".join(errors), "updated_at": now}
        connected = max(int(m.get("last_connected_at") or 0) for m in markets.values())
        if connected:
            out["last_connected_at"] = connected
        return out

    def stop_all(self, reason: str) -> None:
        for account_id, markets in list(self.markets.items()):
            for market in list(markets):
                self.set(account_id, "DISCONNECTED", reason, market=market)


def user_data_config(settings) -> dict:
    """``settings.extra["user_data"]``: ``true`` or ``{"keepalive_s": 1800, "reconnect_delay_ms": 500,
    "seen_window_s": 691200}`` (the report de-duplication window, default 8 days)."""
    raw = (getattr(settings, "extra", None) or {}).get("user_data")
    return raw if isinstance(raw, dict) else ({} if raw else {"disabled": True})


def start_user_data(account: Account, settings, *, r, clock, store, board: StatusBoard, market: str = "FUT"):
    """Open one account's user-data stream for ``market`` (FUT or SPOT): listenKey, keep-alive, expiry
    renewal and REST catch-up, VenueReport, funding_records (FUT)."""
    from chimera.feeds.user_data import KEEPALIVE_S, SEEN_WINDOW_MS, UserDataConnector
    from chimera.venues.binance.market_data import futures_rest, spot_rest

    cfg = user_data_config(settings)
    spot = market == "SPOT"
    rest_base, ws_base = endpoints(settings, "spot" if spot else "perp")
    conn = UserDataConnector(
        r=r, clock=clock, store=store, ws_url=ws_base, market=market,
        rest=(spot_rest if spot else futures_rest)(rest_base, account.api_key, account.api_secret),
        account_id=account.account_id,
        symbols=market_config(settings)["spot_symbols"] if spot else list(settings.symbols),
        keepalive_s=float(cfg.get("keepalive_s", KEEPALIVE_S)),
        seen_window_ms=int(float(cfg.get("seen_window_s", SEEN_WINDOW_MS / 1000)) * 1000),
        reconnect_delay_ms=int(cfg.get("reconnect_delay_ms", 500)),
        on_status=lambda status, err: board.set(account.account_id, status, err, market=f"user_{market.lower()}"))
    conn.start()
    return conn


def run(settings, stop: threading.Event) -> None:
    from chimera.handlers.treasury import transfer as treasury
    from chimera.ops.bootstrap import clock_from, redis_from, stores_from
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
    main = next(a for a in enabled if a.account_id == "main")
    consumer = settings.consumer or "s1"
    tw = Worker(treasury.SPEC, r, settings=settings, store=store, objects=objects, clock=clock,
                consumer=f"{consumer}-treasury", services={})
    tw_thread = threading.Thread(target=tw.run, name="s1-treasury", daemon=True)
    user_streams, markets = [], []
    try:  # a FatalError (rejected API key) at any start stops what already started
        if not user_data_config(settings).get("disabled"):
            user_markets = ["FUT", "SPOT"] if market_config(settings)["spot_symbols"] else ["FUT"]
            for a in enabled:
                for m in user_markets:
                    user_streams.append(start_user_data(a, settings, r=r, clock=clock, store=store, board=board,
                                                        market=m))
        else:
            logger.warning("s1: user-data streams are off (settings.extra['user_data'] not set)")
        markets.append(start_market(settings, "perp", list(settings.symbols), main, r=r, clock=clock, board=board))
        spot = market_config(settings)["spot_symbols"]
        if spot:
            markets.append(start_market(settings, "spot", spot, main, r=r, clock=clock, board=board))
        tw_thread.start()
        stop.wait()
    finally:
        tw.stop()
        for m in markets:
            m.stop()
        for u in user_streams:
            u.stop()
        if tw_thread.ident is not None:  # a failed market start must surface, not "cannot join thread"
            tw_thread.join(10)
        board.stop_all("stopped")


SPEC = run
