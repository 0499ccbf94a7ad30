"""VenueServer: owns the engine, the replay driver, the WS hub, faults and durable state."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from aiohttp import web
from loguru import logger

from .. import state as state_store
from ..engine import Account, Engine, ExchangeInfo, Fees, FillModel
from ..engine.market import event_from_json
from ..engine.model import FUTURES, VenueError
from ..faults import FaultConfig
from ..replay import DataSpec, ReplayClock, build_feed
from ..replay.feed import sample_specs
from . import rest_algo, rest_futures, rest_spot
from .auth import RateLimiter, check_api_key, check_signed, read_params
from .formats import user_event
from .frames import market_frames, no_funding
from .ws import HIGH_WATER, WsHub

BATCH = 500


def default_keys(name: str) -> tuple[str, str]:
    key = hashlib.sha256(f"chimera-key-{name}".encode()).hexdigest()
    secret = hashlib.sha256(f"chimera-secret-{name}".encode()).hexdigest()
    return key, secret


def load_accounts(path: str | None) -> list[Account]:
    if path:
        spec = json.loads(Path(path).read_text())["accounts"]
    else:
        spec = [{"name": "main", "spot": {"USDT": "100000", "BTC": "1", "ETH": "10"}, "futures": {"USDT": "100000"}},
                {"name": "sub1", "spot": {"USDT": "10000"}, "futures": {"USDT": "10000"}}]
    out = []
    for a in spec:
        key, secret = default_keys(a["name"])
        acc = Account(name=a["name"], api_key=a.get("api_key", key), api_secret=a.get("api_secret", secret))
        for asset, amount in a.get("spot", {}).items():
            acc.spot_add(asset, free=Decimal(str(amount)))
        acc.futures_wallet = {k: Decimal(str(v)) for k, v in a.get("futures", {}).items()}
        out.append(acc)
    return out


@dataclass
class VenueConfig:
    host: str = "127.0.0.1"
    port: int = 0
    data: list[DataSpec] = field(default_factory=sample_specs)
    symbols: list[str] | None = None
    speed: float = 0.0
    accounts_file: str | None = None
    state_file: str | None = None
    fill_mode: str = "through"
    fees: Fees = field(default_factory=Fees)
    faults: FaultConfig = field(default_factory=FaultConfig)
    weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    start_ms: int | None = None
    end_ms: int | None = None
    half_spread_bps: Decimal = Decimal("1")
    impact_bps_per_million: Decimal = Decimal("5")
    # Symbol capabilities (every spot symbol): no OCO, and/or order types switched off, e.g.
    # ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT") for "no conditional orders".
    spot_oco_allowed: bool = True
    spot_disabled_order_types: tuple[str, ...] = ()
    # Paced replay (pacing.py): advance one step at a time, each once Chimera's streams are drained.
    pace_redis_url: str = ""
    pace_step_ms: int = 60_000
    pace_timeout_s: float = 30.0
    # Publish the replay time on this Redis (replay:{clock}) for workers with CHIMERA_CLOCK=follow;
    # implied by pace_redis_url.
    clock_redis_url: str = ""
    # Paced: before the first step, wait up to this long for S1 to subscribe to the data's klines
    # (``chimera up`` starts the venue before the workers); 0 = start at once.
    pace_start_wait_s: float = 0.0


class VenueServer:
    def __init__(self, cfg: VenueConfig):
        self.cfg = cfg
        self.info = ExchangeInfo.load(symbols=cfg.symbols)
        self.info.restrict_spot(oco_allowed=cfg.spot_oco_allowed, disabled_types=cfg.spot_disabled_order_types)
        self.clock = ReplayClock(speed=cfg.speed)
        self.feed = build_feed(cfg.data, cfg.start_ms, cfg.end_ms)
        self.clock.total = len(self.feed)
        first = self.feed.peek()
        self.clock.time_ms = (first.time - 1) if first else int(time.time() * 1000)
        fill = FillModel(half_spread_bps=cfg.half_spread_bps, impact_bps_per_million=cfg.impact_bps_per_million,
                         fill_mode=cfg.fill_mode)
        self.engine = Engine(self.info, self.clock, load_accounts(cfg.accounts_file), cfg.fees, fill)
        self.listen_keys: dict[str, dict] = {}
        self.state_file = state_store.StateFile(cfg.state_file) if cfg.state_file else None
        self.faults = cfg.faults
        self.limiter = RateLimiter(cfg.weight_per_minute, cfg.orders_per_10s, cfg.orders_per_minute)
        self.hub = WsHub(self.listen_keys)
        self._wake = asyncio.Event()
        self._dirty = False
        self._tasks: list[asyncio.Task] = []
        self._restore()
        self.clock.reanchor()
        self.gate = None
        self.pace = {"step_ms": cfg.pace_step_ms, "steps": 0, "timeouts": 0, "waited_ms": 0}
        self._step_end: int | None = None
        self._step_closed: set[str] = set()
        self._wait_since: float | None = None
        if cfg.pace_redis_url:
            from ..pacing import DrainGate

            self.gate = DrainGate(cfg.pace_redis_url, self.info.rules[FUTURES], timeout_s=cfg.pace_timeout_s)
        self.clock_pub = None
        self._step_due: int | None = None  # the current paced step ends at this timer's due time
        self._listened = cfg.pace_start_wait_s <= 0  # paced: S1 listens to the data's klines (may start)
        if cfg.clock_redis_url or cfg.pace_redis_url:
            from ..pacing import ClockPublisher

            self.clock_pub = ClockPublisher(cfg.clock_redis_url or cfg.pace_redis_url)
            self.publish_clock(force=True)

    # -- state ---------------------------------------------------------------------------------
    def _restore(self) -> None:
        if not self.cfg.state_file:
            return
        data = self.state_file.load()
        if not data:
            return
        state_store.restore(self.engine, data)
        self.listen_keys.update(data.get("listen_keys", {}))
        # Rebuild market state by re-applying already consumed events without matching.
        for _ in range(min(data["clock"]["processed"], len(self.feed))):
            ev = self.feed.pop()
            m = self.engine.markets.get(ev.market, {}).get(ev.symbol)
            if m is not None and ev.kind != "funding":
                m.apply(ev)
        self.clock.processed = self.feed.cursor
        self.clock.time_ms = max(self.clock.time_ms, data["clock"]["time_ms"])
        logger.info("venue state restored from {} at {}", self.cfg.state_file, self.clock.time_ms)

    def save_state(self) -> None:
        if self.state_file is not None:
            self.state_file.save(self.engine, self.clock, self.listen_keys)
        self._dirty = False

    # -- replay ----------------------------------------------------------------------------------
    def publish_clock(self, force: bool = False) -> None:
        if self.clock_pub is not None:
            self.clock_pub.publish(self.clock.time_ms, self.clock.speed, paced=self.gate is not None,
                                   done=self.clock.done, force=force)

    def process_next(self) -> None:
        ev = self.feed.pop()
        self.clock.time_ms = max(self.clock.time_ms, ev.time)
        self.engine.on_market(ev)
        self.clock.processed = self.feed.cursor
        wanted = self.hub.subscribed_streams(ev.market)
        if wanted:
            known = ev.symbol in self.engine.markets.get(ev.market, {})
            frames = market_frames(ev, wanted, (lambda: self._funding_info(ev.symbol, ev.time)) if known else no_funding)
            if frames and ev.kind == "depth" and self.faults.drop_depth_diffs > 0:
                self.faults.drop_depth_diffs -= 1
                self.faults.count("depth_diff_dropped")
                frames = []
            for stream, data in frames:
                self.hub.publish(ev.market, stream, data)
        self.dispatch_user_events()

    def _funding_info(self, symbol: str, now: int) -> tuple[str, int]:
        series = self.feed.funding.get(symbol) or []
        for ev in series:
            if ev.time > now:
                return format(ev.rate, "f"), ev.time
        return "0", 0

    def advance(self, to_ms: int | None = None, events: int | None = None) -> None:
        n = 0
        while self.feed.peek() is not None:
            if to_ms is not None and self.feed.peek().time > to_ms:
                break
            if events is not None and n >= events:
                break
            self.process_next()
            n += 1
        if to_ms is not None:
            self.clock.time_ms = max(self.clock.time_ms, to_ms)
        self.clock.done = self.feed.peek() is None
        self.clock.reanchor()
        self.publish_clock(force=True)
        if n:
            self.save_state()

    async def _driver(self) -> None:
        while True:
            ev = self.feed.peek()
            if ev is None:
                self.clock.done = True
                await self._wait(1.0)
                continue
            speed = self.clock.speed
            if speed == 0:
                await self._wait(1.0)
                continue
            if speed > 0:
                delay = self.clock.wall_delay_until(ev.time)
                if delay > 0:
                    await self._wait(min(delay, 0.25))
                    continue
            elif self.hub.backlog() > HIGH_WATER:
                await asyncio.sleep(0.005)
                continue
            if self.gate is not None and not await self._paced(ev.time):
                await asyncio.sleep(0.005)
                continue
            for _ in range(BATCH):
                ev = self.feed.peek()
                if ev is None or (speed > 0 and self.clock.wall_delay_until(ev.time) > 0):
                    break
                if self.gate is not None and ev.time >= self._step_end:
                    break  # the step is complete: the pipeline catches up before the next one
                raw = ev.raw or {}
                if raw.get("kline") and raw["kline"][7] and ev.market == FUTURES:
                    self._step_closed.add(ev.symbol)
                self.process_next()
            self.publish_clock()
            await asyncio.sleep(0)

    async def _paced(self, next_ms: int) -> bool:
        """May the driver replay the event at ``next_ms``? Inside the current step: yes. At the next
        step: once the frames are out and the pipeline drained (or the wait timed out)."""
        if not self._listened and not self._listening():
            return False
        if self._step_end is None:
            self._step_end = await asyncio.to_thread(self._next_step_end, next_ms)
        if next_ms < self._step_end:
            return True
        if self._wait_since is None:
            self._wait_since = time.monotonic()
            if self._step_due is not None:  # the market reaches the timer's due time before the next event
                self.clock.time_ms = max(self.clock.time_ms, self._step_due)
            self.publish_clock(force=True)
        waited = time.monotonic() - self._wait_since
        drained = self.hub.backlog() == 0 and await asyncio.to_thread(self._drained, set(self._step_closed))
        if not drained and waited < self.gate.timeout_s:
            return False
        if not drained:
            self.pace["timeouts"] += 1
            logger.warning("pace: the pipeline did not drain the step ending {} within {}s; going on",
                           self._step_end, self.gate.timeout_s)
        self.pace["steps"] += 1
        self.pace["waited_ms"] += int(waited * 1000)
        self._wait_since = None
        self._step_closed.clear()
        self._step_end = await asyncio.to_thread(self._next_step_end, next_ms)
        return True

    def _listening(self) -> bool:
        """Before the first step: has S1 subscribed to every replayed symbol's 1m klines? A replay
        started before the pipeline listens would lose its first bars (bounded: after
        ``pace_start_wait_s`` it starts anyway, with a warning)."""
        if self._wait_since is None:
            self._wait_since = time.monotonic()
        wanted = {f"{sym.lower()}@kline_1m" for market, sym, _iv in self.feed.klines if market == FUTURES}
        waited = time.monotonic() - self._wait_since
        limit = self.cfg.pace_start_wait_s
        if not wanted <= self.hub.subscribed_streams(FUTURES) and waited < limit:
            return False
        if waited >= limit:
            logger.warning("pace: nobody subscribed to {} within {:.0f}s; replaying anyway", sorted(wanted), waited)
        self._listened, self._wait_since = True, None
        return True

    def _next_step_end(self, next_ms: int) -> int:
        """End (exclusive) of the step starting with the event at ``next_ms``: the end of its step
        (a market minute by default), or sooner, the due time of the earliest armed timer: the events
        before it are replayed, then the timer fires (a timer due at or before an event fires first)."""
        step = max(self.pace["step_ms"], 1)
        end = (next_ms // step + 1) * step
        due = self.gate.next_due()
        self._step_due = due if due is not None and due < end else None
        # A timer due before the next event: no event in this step (end = next_ms), only the timer.
        return end if self._step_due is None else max(self._step_due, next_ms)

    def _drained(self, closed: set[str]) -> bool:
        # The due-queue is read on both sides of the groups: a handler can arm a timer that is due at
        # once (a maker check that found the window not over yet) and ack its entry in between.
        now = self.clock.time_ms
        return (self.gate.timers_fired(now) and self.gate.drained(self._step_end, closed)
                and self.gate.timers_fired(now))

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _saver(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._dirty:
                self.save_state()

    async def _ws_dropper(self) -> None:
        while True:
            every = self.faults.ws_drop_every_s
            await asyncio.sleep(every if every > 0 else 1.0)
            if self.faults.ws_drop_every_s > 0:
                self.faults.count("ws_drop")
                self.faults.count("ws_connections_dropped", await self.hub.drop_all())

    def dispatch_user_events(self) -> None:
        events = self.engine.drain_events()
        if not events:
            return
        self._dirty = True
        for ev in events:
            keys = [k for k, v in self.listen_keys.items() if v["account"] == ev.account and v["market"] == ev.market]
            if not keys:
                continue
            payload = user_event(self.engine, ev)
            for k in keys:
                self.hub.publish_user(k, payload)

    # -- HTTP plumbing -------------------------------------------------------------------------
    def route(self, handler, security: str = "none", weight: int = 1, order: bool = False):
        async def wrapped(request: web.Request) -> web.StreamResponse:
            headers: dict[str, str] = {}
            mutating = request.method in ("POST", "PUT", "DELETE")
            try:
                if self.faults.latency_ms:
                    await asyncio.sleep(self.faults.latency_ms / 1000)
                if self.faults.roll(self.faults.error_429_share):
                    self.faults.count("error_429")
                    return web.json_response({"code": -1003, "msg": "Too many requests; chimera fault injection."},
                                             status=429, headers={"Retry-After": "1"})
                if self.faults.roll(self.faults.error_5xx_share):
                    self.faults.count("error_5xx")
                    return web.json_response({"code": -1001, "msg": "Internal error; unable to process your "
                                              "request. Please try again."}, status=503)
                params, total = await read_params(request)
                ip = request.remote or "?"
                used, over = self.limiter.add_weight(ip, weight)
                headers["X-MBX-USED-WEIGHT-1M"] = str(used)
                if over:
                    headers["Retry-After"] = "60"
                    raise VenueError(-1003, f"Too many requests; current limit of IP({ip}) request weight is "
                                            f"{self.limiter.weight_limit} per minute.", http_status=429)
                account = None
                if security == "signed":
                    account = check_signed(self.engine, request, params, total, int(time.time() * 1000))
                elif security == "key":
                    account = check_api_key(self.engine, request)
                if order and account:
                    c10, c1m, too_many = self.limiter.add_order(account)
                    headers["X-MBX-ORDER-COUNT-10S"] = str(c10)
                    headers["X-MBX-ORDER-COUNT-1M"] = str(c1m)
                    if too_many:
                        headers["Retry-After"] = "10"
                        raise VenueError(-1015, f"Too many new orders; current limit is {self.limiter.orders_10s} "
                                                "orders per TEN_SECONDS.", http_status=429)
                result = handler(self, params, account)
                self.dispatch_user_events()
                if mutating and security != "none":
                    self.save_state()
                if mutating and self.faults.reply_delay_ms:
                    # Executed, answer held back: a client killed now never learns the outcome.
                    await asyncio.sleep(self.faults.reply_delay_ms / 1000)
                if mutating and self.faults.roll(self.faults.lost_reply_share):
                    self.faults.count("lost_reply")
                    # The order is in the engine; the client never hears back.
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError()
                return web.json_response(result, headers=headers, dumps=_dumps)
            except VenueError as exc:
                self.dispatch_user_events()
                return web.json_response({"code": exc.code, "msg": exc.msg}, status=exc.http_status, headers=headers)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must still not surface as a 500 to a client
                logger.exception("venue handler failed: {} {}", request.method, request.path)
                return web.json_response({"code": -1000, "msg": "An unknown error occurred while processing the "
                                          "request."}, status=400, headers=headers)
        return wrapped

    def listen_key(self, account: str, market: str) -> str:
        for k, v in self.listen_keys.items():
            if v["account"] == account and v["market"] == market:
                return k
        key = hashlib.sha256(f"{account}-{market}-{time.time_ns()}".encode()).hexdigest()
        self.listen_keys[key] = {"account": account, "market": market}
        return key

    def build_app(self) -> web.Application:
        app = web.Application()
        rest_futures.register(self, app)
        rest_spot.register(self, app)
        rest_algo.register(self, app)
        add = app.router.add_route
        add("GET", "/chimera/v1/clock", self._clock)
        add("POST", "/chimera/v1/replay", self._replay)
        add("GET", "/chimera/v1/faults", self._faults_get)
        add("POST", "/chimera/v1/faults", self._faults_set)
        add("GET", "/chimera/v1/ledger", self._ledger)
        add("POST", "/chimera/v1/market", self._inject)
        add("POST", "/chimera/v1/adl", self._adl)
        add("POST", "/chimera/v1/listen_keys/expire", self._expire_listen_keys)
        for prefix, market in (("/futures", FUTURES), ("", FUTURES), ("/spot", "spot")):
            for kind in ("", "/market", "/public", "/private"):
                add("GET", f"{prefix}{kind}/stream", self._ws_combined(market))
                add("GET", f"{prefix}{kind}/ws", self._ws_raw(market))
                add("GET", f"{prefix}{kind}/ws/{{streams:.*}}", self._ws_raw(market))
        app.on_startup.append(self._on_start)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def _ws_combined(self, market: str):
        async def h(request: web.Request):
            streams = [s for s in request.query.get("streams", "").split("/") if s]
            return await self._ws_faults(request) or await self.hub.handle(request, market, True, streams)
        return h

    def _ws_raw(self, market: str):
        async def h(request: web.Request):
            streams = [s for s in request.match_info.get("streams", "").split("/") if s]
            return await self._ws_faults(request) or await self.hub.handle(request, market, False, streams)
        return h

    async def _ws_faults(self, request: web.Request) -> web.StreamResponse | None:
        """The connect faults: a refused upgrade (503) or a socket closed right after the upgrade."""
        if self.faults.take("refuse_ws_connects", "ws_connect_refused"):
            return web.Response(status=503, text="chimera fault: WebSocket connect refused")
        if self.faults.take("drop_ws_connects", "ws_connect_dropped"):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.close(code=1001, message=b"chimera fault: dropped while connecting")
            return ws
        return None

    async def _on_start(self, app) -> None:
        loop = asyncio.get_event_loop()
        self._tasks = [loop.create_task(self._driver()), loop.create_task(self._saver()),
                       loop.create_task(self._ws_dropper())]

    async def _on_shutdown(self, app) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close_all()
        self.save_state()
        if self.gate is not None:
            self.gate.close()
        if self.clock_pub is not None:
            self.publish_clock(force=True)
            self.clock_pub.close()

    async def _clock(self, request):
        body = self.clock.as_json()
        if self.gate is not None:
            body["pace"] = dict(self.pace)
        return web.json_response(body)

    async def _replay(self, request):
        body = await request.json() if request.can_read_body else {}
        if "speed" in body:
            speed = body["speed"]
            self.clock.set_speed(-1.0 if speed == "max" else float(speed))
        if "advance_to_ms" in body or "advance_events" in body:
            self.advance(body.get("advance_to_ms"), body.get("advance_events"))
        self.publish_clock(force=True)
        self._wake.set()
        return web.json_response(self.clock.as_json())

    async def _inject(self, request):
        """Drills and tests: push market events through the same path replayed data takes."""
        body = await request.json()
        for raw in body.get("events", []):
            ev = event_from_json(raw, self.clock.time_ms)
            self.clock.time_ms = ev.time
            self.engine.on_market(ev)
            for stream, data in market_frames(ev, self.hub.subscribed_streams(ev.market)):
                self.hub.publish(ev.market, stream, data)
            self.dispatch_user_events()
        self.save_state()
        return web.json_response(self.clock.as_json())

    async def _adl(self, request):
        """Drills and tests: auto-deleverage a position now (``{"account", "symbol", "qty"?, "price"?}``)."""
        body = await request.json()
        try:
            order = self.engine.deleverage(body.get("account", "main"), body["symbol"],
                                           Decimal(str(body["qty"])) if body.get("qty") else None,
                                           Decimal(str(body["price"])) if body.get("price") else None)
        except (KeyError, ValueError, VenueError) as exc:
            return web.json_response({"error": f"adl refused: {exc}"}, status=400)
        self.dispatch_user_events()
        self.save_state()
        return web.json_response({"orderId": order.order_id, "clientOrderId": order.client_id,
                                  "price": str(order.price), "qty": str(order.orig_qty)})

    async def _expire_listen_keys(self, request):
        """Drills and tests: expire listenKeys now, as Binance does after 60 min without a keep-alive.

        Body ``{"listenKey": k}`` or ``{"account": name, "market": "futures"|"spot"}``, and
        ``"notify": false`` to expire silently (a lost push). Each key is removed (keep-alive answers
        -1125), its subscribers get ``listenKeyExpired`` (unless silent) and stop receiving.
        """
        body = await request.json()
        expired = [k for k, v in self.listen_keys.items()
                   if k == body.get("listenKey") or (body.get("account") == v["account"]
                                                      and body.get("market", FUTURES) == v["market"])]
        for k in expired:
            del self.listen_keys[k]
            if body.get("notify", True):
                self.hub.publish_user(k, {"e": "listenKeyExpired", "E": self.clock.time_ms, "listenKey": k})
            for c in self.hub.conns:
                c.subs.discard(k)
        self.save_state()
        return web.json_response({"expired": expired})

    async def _faults_get(self, request):
        return web.json_response(self.faults.as_json())

    async def _faults_set(self, request):
        body = await request.json()
        self.faults.update(body)
        dropped = await self.hub.drop_all() if body.get("drop_ws_now") else 0
        if body.get("drop_ws_now"):
            self.faults.count("ws_drop")
            self.faults.count("ws_connections_dropped", dropped)
        return web.json_response({**self.faults.as_json(), "dropped": dropped})

    async def _ledger(self, request):
        """Venue-side truth for reconciliation drills (not a Binance endpoint)."""
        name = request.query.get("account", "main")
        if name not in self.engine.accounts:
            return web.json_response({"error": f"unknown account {name!r}"}, status=400)
        start, end = request.query.get("startTime"), request.query.get("endTime")
        wallet = self.engine.wallet_history(name, int(start) if start else None, int(end) if end else None)
        return web.json_response({"funding": [f for f in self.engine.funding_log if f["account"] == name],
                                  "liquidations": [x for x in self.engine.liquidations if x["account"] == name],
                                  "wallet": {k: str(v) for k, v in wallet.items()},
                                  "clock": self.clock.as_json()})


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)
