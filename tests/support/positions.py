"""S6 test helpers: position events, driven management ticks, the position document, and what the
*venue* says about a position's protection (open algo orders and position size through the official SDK)."""

from __future__ import annotations

import contextlib
import threading
from decimal import Decimal

from chimera.schemas.documents.positions import Position, from_doc
from chimera.schemas.envelope import decode
from chimera.schemas.messages import ManagePositions
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.binance.adapter import FuturesTrading, VenueOrder
from chimera.workers.clock import WallClock
from tests.support.polling import wait_until


def pos_events(r, kind: str) -> list:
    return [e.payload for e in (decode(f) for _, f in r.xrange(keys.POS_EVENTS)) if e.payload.kind == kind]


def tick(r, key: str, **fields) -> None:
    Producer(r, WallClock()).publish(keys.POS_COMMANDS, ManagePositions(**fields), idempotency_key=key)


def position(store, pos_id: str) -> Position | None:
    """The typed position document (S6's one record of it)."""
    doc = store.get("positions", pos_id)
    return None if doc is None else from_doc(doc)


def settled(pos: Position | None) -> bool:
    """No stop, rung or add of this snapshot in flight and no replaced stop still being cancelled."""
    return pos is not None and pos.stop.pending is None and not pos.stop.retired and not pos.tp.pending \
        and not pos.adds.pending


def quiet(store, pos_id: str) -> bool:
    return settled(position(store, pos_id))


def wait_pass(store, pos_id: str, tick_key: str, timeout: float = 20) -> Position:
    """Until the position's pass for ``tick_key`` ran and everything it started has settled.

    One read decides: checking the pass and the in-flight work on two reads could pair an ACTIVE
    snapshot with a later CLOSED one (whose rung is no longer pending) and return a stale position."""
    def done():
        pos = position(store, pos_id)
        if pos is not None and pos.state == "CLOSED":
            return pos
        return pos if pos is not None and pos.last_pass == f"manage:{pos_id}:{tick_key}" and settled(pos) else None

    return wait_until(done, timeout=timeout, message=f"pass {tick_key} of {pos_id} settled")


def venue_stops(fut: FuturesTrading, symbol: str, side: str = "SELL") -> list[VenueOrder]:
    return [o for o in fut.open_algo_orders(symbol) if o.type == "STOP_MARKET" and o.reduce_only and o.side == side]


def venue_amt(fut: FuturesTrading, symbol: str) -> Decimal:
    return sum((abs(Decimal(p["positionAmt"])) for p in fut.position_risk(symbol)), Decimal(0))


def drained(r, stream: str, group: str) -> bool:
    """Every entry of ``stream`` was delivered to ``group`` and acknowledged."""
    info = next((g for g in r.xinfo_groups(stream) if (g["name"].decode() if isinstance(g["name"], bytes)
                                                       else g["name"]) == group), None)
    return info is not None and info["pending"] == 0 and info.get("lag", 1) == 0


class CoverageWatcher:
    """Samples the venue continuously: position size, then open stops, then size again. A sample whose
    two size reads agree and where no reduce-only STOP_MARKET covers that size is a violation."""

    def __init__(self, fut: FuturesTrading, symbol: str) -> None:
        self.fut, self.symbol = fut, symbol
        self.samples = 0
        self.violations: list[tuple[Decimal, list]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            before = venue_amt(self.fut, self.symbol)
            stops = venue_stops(self.fut, self.symbol)
            after = venue_amt(self.fut, self.symbol)
            if before == after and before > 0 and not any(o.qty >= before for o in stops):
                self.violations.append((before, [(o.client_order_id, o.qty, o.stop_price) for o in stops]))
            self.samples += 1

    def __enter__(self) -> CoverageWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def user_data(r, venue, store_url: str, *, market: str = "FUT", account: str = "main"):
    """S1's user-data connector (futures, or SPOT executionReports) for one of the venue's accounts,
    subscribed, for the block's duration."""
    from chimera.feeds.user_data import UserDataConnector
    from chimera.store import open_store
    from chimera.venues.binance.market_data import futures_rest, spot_rest

    key, secret = venue.keys[account]
    if market == "SPOT":
        ud = UserDataConnector(r=r, clock=WallClock(), store=open_store(store_url), ws_url=venue.spot_ws_url,
                               rest=spot_rest(venue.base_url, key, secret), account_id=account, market="SPOT",
                               symbols=["BTCUSDT"])
    else:
        ud = UserDataConnector(r=r, clock=WallClock(), store=open_store(store_url), ws_url=venue.ws_url,
                               rest=futures_rest(venue.base_url, key, secret), account_id=account,
                               symbols=["BTCUSDT"])
    ud.start()
    try:
        wait_until(lambda: any(ud.listen_key in c.subs for c in venue.server.hub.conns), timeout=20,
                   message="user data subscribed")
        yield ud
    finally:
        ud.stop()
