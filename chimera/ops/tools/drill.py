"""``chimera drill``: the chaos drill. Real processes, a faulty venue, random SIGKILLs; then proof.

1. Starts ``redis-server`` (or uses ``--redis-url``: a dedicated instance, empty unless ``--flush``),
   the local venue in-process, replaying the shipped real sample (BTC/ETH USDT-M 1m klines) with
   faults (default 10% 5xx, 10% lost replies, WebSocket drops every few seconds), and worker
   processes: s1 (user data), s3, s4 (two replicas), s5, s6 and the scheduler, each running
   ``chimera worker --role ...``'s code in a process forked from a pre-warmed zygote
   (``forkserver.py``: a restart costs a fork, not an interpreter start), logs in ``<data-dir>/logs``.
2. Activates the drill bundle (``chimera/bundles/drill_high_limits.json``: Decide picks the side,
   limits high, MARKET entries) and writes one signal per intent (price from the venue, ATR 3%,
   so stops rest 4.5% away); then pushes ``Decide`` commands on ``strat:{commands}`` — the real
   S3 -> S4 -> S6 path (guards, budget, intent, order, exchange-side stop).
3. Meanwhile every ``--kill-every-ms`` SIGKILLs a random worker that has been up for at least
   ``min_uptime_ms`` (a process killed while importing tests nothing) and starts it again under the
   same consumer name; a crashed worker is restarted too. ``midrun`` (tests) runs once half way.
4. Chaos over: faults off, wait until every intent is resolved and the streams are drained, then
   ask S5 for runs until one reports zero differences ("time to consistent").
5. Asserts (``drill_checks``) and reports the figures, the books' identity per account among them (read
   once S6 and vpos are drained); ``DrillReport.ok`` is the verdict.

``accounts=2`` (``--accounts 2``) runs it on main and sub1 at once: the intents alternate between the
two accounts (both trade both symbols, the same direction each), S5 reconciles each account, and the
verdict adds 0 cross-account orders (every order the venue holds under one of Chimera's client ids is
at the account its leg names, read from the venue's books) and, per account, open store positions
equal to the venue's position per symbol and side; protection and consistency are checked per account.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chimera.errors import FatalError
from chimera.feeds.backoff import CAP_S
from chimera.ops.books import lines as book_lines
from chimera.ops.tools import drill_checks as checks
from chimera.ops.tools.fleet import Fleet
from chimera.schemas.envelope import decode
from chimera.schemas.messages import Decide, Reconcile
from chimera.store import collections as C
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.streams.redis import connect, is_cluster
from chimera.workers.clock import WallClock

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "drill_high_limits.json"  # chimera/bundles/
SIDES = (("BTCUSDT", "BUY"), ("ETHUSDT", "SELL"))  # one direction per symbol: the venue nets one-way
ACCOUNTS = ("main", "sub1")  # the local venue's (and paper mode's) default accounts
DRAINED = ((keys.STRAT_COMMANDS, "s3"), (keys.ORD_RESULTS, "s3"), (keys.ORD_COMMANDS, "s4"),
           (keys.ROUTER_TIMERS, "s4"), (keys.ORD_RESULTS, "s6"), (keys.VENUE_REPORTS, "s6"),
           (keys.VENUE_REPORTS, "vpos"))
USER_STREAMS_UP_S = CAP_S + 15.0  # S1's longest reconnect backoff, then a connect and the catch-up
BOOKS_SETTLE_S = 15.0  # S1's catch-up books a missed trade within seconds; a longer gap is a failure, not lag


@dataclass
class DrillConfig:
    intents: int = 300
    accounts: int = 1  # 1: main; 2: main and sub1 at once
    kill_every_ms: int = 300
    rate_per_s: float = 20.0
    redis_url: str | None = None  # None: start a redis-server of our own
    flush: bool = False  # empty a given Redis first (it must be a dedicated instance)
    data_dir: str | None = None  # None: a temporary directory
    error_5xx: float = 0.10
    lost_reply: float = 0.10
    ws_drop_every_s: float = 4.0
    speed: float = 30.0  # venue replay speed (x real time)
    s4_replicas: int = 2
    min_uptime_ms: int = 1000
    chaos_tail_s: float = 2.0  # keep killing at least this long after the last intent was pushed
    settle_timeout_s: float = 180.0
    reconcile_interval_ms: int = 2000
    seed: int = 7
    midrun: Callable[[], None] | None = None  # e.g. kill a Redis Cluster master (tests)
    progress: Callable[[str], None] | None = None


@dataclass
class DrillReport:
    intents: int
    resolution: checks.Resolution
    orders: checks.VenueOrders
    protection: checks.Protection
    kills: Counter
    crashes: Counter
    faults: dict
    final_run: dict | None
    time_to_consistent_s: float | None
    elapsed_s: float
    dead_letters: int
    data_dir: str
    failures: list[str] = field(default_factory=list)
    accounts: tuple[str, ...] = ("main",)
    final_runs: dict = field(default_factory=dict)  # account -> its last S5 run
    cross_account: list[str] = field(default_factory=list)
    quantity_mismatches: list[str] = field(default_factory=list)
    virtual_gaps: list[str] = field(default_factory=list)  # Σ virtual positions != the venue's, per account
    filled_by_account: dict = field(default_factory=dict)
    books: dict = field(default_factory=dict)  # account -> the books' identity rows (chimera/ops/books.py)
    degraded: list[str] = field(default_factory=list)  # why S5 set REDUCE_ONLY (its RECONCILE_DEGRADED alerts)
    lost_results: list[str] = field(default_factory=list)  # filled intents whose OrderResult Redis lost
    user_streams_down: list[str] = field(default_factory=list)  # S1 user data not CONNECTED after the chaos
    trade_trail: list[str] = field(default_factory=list)  # when the books fail: where each missing trade stopped

    @property
    def ok(self) -> bool:
        return not self.failures

    def figures(self) -> dict:
        res = self.resolution
        return {
            "intents": self.intents, "filled": len(res.filled), "rejected": dict(res.rejected),
            "skipped": dict(res.skipped), "lost": len(res.lost), "duplicates": self.orders.duplicates,
            "kills": sum(self.kills.values()), "kills_by_role": dict(self.kills), "crashes": dict(self.crashes),
            "faults_injected": self.faults, "open_positions": self.protection.store_open,
            "venue_positions": self.protection.positions, "uncovered": len(self.protection.uncovered),
            "time_to_consistent_s": None if self.time_to_consistent_s is None else round(self.time_to_consistent_s, 1),
            "final_reconcile": (self.final_run or {}).get("summary"), "dead_letters": self.dead_letters,
            "elapsed_s": round(self.elapsed_s, 1), "ok": self.ok, "failures": self.failures,
            "data_dir": self.data_dir, "accounts": list(self.accounts), "filled_by_account": self.filled_by_account,
            "cross_account_orders": len(self.cross_account), "quantity_mismatches": self.quantity_mismatches,
            "virtual_gaps": self.virtual_gaps, "degraded": self.degraded, "lost_results": self.lost_results,
            "user_streams_down": self.user_streams_down,
            "books": {a: {c["id"]: {k: c[k] for k in ("expected", "actual", "ok")} for c in rows}
                      for a, rows in self.books.items()},
        }

    def text(self) -> str:
        f = self.figures()
        faults = f["faults_injected"]
        lines = [
            f"chaos drill: {'PASS' if self.ok else 'FAIL'} in {f['elapsed_s']} s (logs: {self.data_dir}/logs)",
            f"  intents            {f['intents']}: filled {f['filled']}, rejected {sum(f['rejected'].values())}, "
            f"skipped {sum(f['skipped'].values())}, lost {f['lost']}",
            f"  kills              {f['kills']} SIGKILL ({', '.join(f'{k} {v}' for k, v in sorted(self.kills.items()))})"
            + (f"; crashes {f['crashes']}" if f["crashes"] else ""),
            f"  faults injected    5xx {faults.get('error_5xx', 0)}, lost replies {faults.get('lost_reply', 0)}, "
            f"ws drops {faults.get('ws_drop', 0)} ({faults.get('ws_connections_dropped', 0)} connections)",
            f"  duplicates         {f['duplicates']} extra entry orders at the venue",
            f"  protection         {f['open_positions']} open positions, {f['uncovered']} uncovered",
            f"  time to consistent {f['time_to_consistent_s']} s (first S5 run with zero differences)",
            f"  dead letters       {f['dead_letters']}",
            f"  virtual positions  {len(f['virtual_gaps'])} (account, symbol, side) where their sum differs from the venue",
        ]
        if len(self.accounts) > 1:
            lines.insert(2, f"  accounts           {', '.join(f'{a} filled {self.filled_by_account.get(a, 0)}' for a in self.accounts)}"
                            f"; cross-account orders {f['cross_account_orders']}, "
                            f"quantity mismatches {len(self.quantity_mismatches)}")
        for reason, n in sorted({**f["rejected"], **{f"skip {k}": v for k, v in f["skipped"].items()}}.items()):
            lines.append(f"    {n:4d} x {reason}")
        # Entries refused by REDUCE_ONLY come from S5 finding the store and the venue apart: say where.
        lines += [f"  S5 degraded        {why}" for why in self.degraded[:10]]
        if self.lost_results:
            lines.append(f"  results lost       {len(self.lost_results)} filled intent(s) whose OrderResult is gone from "
                         f"ord:{{results}} (a failover lost the write): {', '.join(self.lost_results[:5])}")
        lines.append("  books              venue wallet change = Σ realized − fees + funding over the store's "
                     "positions; fills = trades")
        lines += [f"    {line}" for a, rows in self.books.items() for line in book_lines(a, rows)]
        lines += [f"  FAILED: {x}" for x in self.failures[:20]]
        lines += [f"  trade trail: {x}" for x in self.trade_trail[:90]]
        return "\n".join(lines)


# --- processes -----------------------------------------------------------------------------------------


def roles(s4_replicas: int) -> list[tuple[str, str]]:
    return [("s1", "s1"), ("s3", "s3"), *((f"s4-{i}", "s4") for i in range(s4_replicas)), ("s5", "s5"),
            ("s6", "s6"), ("vpos", "vpos"), ("scheduler", "scheduler")]


def _start_redis(root: Path) -> tuple[str, subprocess.Popen]:
    from chimera.venues.local.testing import free_port

    if not shutil.which("redis-server"):
        raise FatalError("redis-server is not installed: apt-get install redis-server, or pass --redis-url")
    port = free_port()
    (root / "redis").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(root / "redis")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    _until(lambda: _pings(url), 10, f"redis-server on port {port} did not start")
    return url, proc


def _pings(url: str) -> bool:
    try:
        return bool(connect(url).ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _prepare_redis(r, flush: bool, url: str) -> None:
    if flush:
        if is_cluster(r):
            r.flushall(target_nodes="primaries")
        else:
            r.flushall()
        return
    size = r.dbsize(target_nodes="primaries") if is_cluster(r) else r.dbsize()
    size = sum(size.values()) if isinstance(size, dict) else size  # per node or summed, by redis-py version
    if size:
        raise FatalError(f"Redis at {url} holds {size} keys; the drill needs a dedicated instance "
                         "(pass --flush to empty it, or omit --redis-url to start one)")


def _until(pred: Callable[[], object], timeout_s: float, what: str, tick: Callable[[], None] | None = None):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        if tick:
            tick()
        time.sleep(0.05)
    raise TimeoutError(what)


# --- the drill -----------------------------------------------------------------------------------------


def worker_env(redis_url: str, root: Path, venue_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CHIMERA_CONSUMER"}
    env.update({
        "CHIMERA_REDIS_URL": redis_url, "CHIMERA_STORE_URL": f"sqlite:///{root}/chimera.sqlite",
        "CHIMERA_OBJECTS_URL": f"file://{root}/objects", "CHIMERA_VENUE": "paper", "CHIMERA_VENUE_URL": venue_url,
        "CHIMERA_ACCOUNTS_FILE": "", "CHIMERA_USER_DATA": "1", "CHIMERA_SYMBOLS": ",".join(s for s, _ in SIDES),
        # Short recovery times, so a SIGKILLed worker's entries and locks come back within a second or three.
        "CHIMERA_CLAIM_IDLE_MS": "1000", "CHIMERA_BLOCK_MS": "100", "CHIMERA_LOCK_TTL_MS": "5000",
        "CHIMERA_LEASE_TTL_MS": "2000", "CHIMERA_LOG_JSON": "0", "CHIMERA_LOG_LEVEL": "WARNING",
    })
    return env


def write_signals(store, venue, n: int, tag: str, accounts: tuple[str, ...] = ("main",)) -> list[tuple[str, ...]]:
    """``(signal_id, symbol, side, account)`` per intent: symbols alternate, and accounts within each symbol."""
    from chimera.venues.local.engine.model import FUTURES

    prices = venue.call(lambda: {s: venue.server.engine.markets[FUTURES][s].mark_or_last for s, _ in SIDES})
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        symbol, side = SIDES[i % len(SIDES)]
        account = accounts[(i // len(SIDES)) % len(accounts)]
        sid = f"drill-{tag}-{i:04d}"
        mid = float(prices[symbol])
        store.upsert(C.SIGNALS, sid, {"signal_id": sid, "symbol": symbol, "t0": now,
                                      "features": {"mid": mid, "atr": mid * 0.03}})
        out.append((sid, symbol, side, account))
    return out


def _chaos(cfg: DrillConfig, r, store, fleet: Fleet, signals: list[tuple[str, ...]], say) -> None:
    """Push the intents and kill workers until every intent is resolved (the work happens under fire)."""
    producer = Producer(r, WallClock())
    rng = random.Random(cfg.seed)
    start = time.monotonic()
    kill_every = cfg.kill_every_ms / 1000
    next_kill = start + kill_every
    pushed, pushed_all_at, midrun, resolved, checked = 0, None, None, False, start
    ids = [sig[0] for sig in signals]
    while True:
        now = time.monotonic()
        due = min(len(signals), int((now - start) * cfg.rate_per_s) + 1)
        while pushed < due:
            sid, symbol, side, account = signals[pushed]
            producer.publish(keys.STRAT_COMMANDS, Decide(signal_id=sid, symbol=symbol, side=side, account_id=account),
                             idempotency_key=f"decide:{sid}", account_id=account)
            pushed += 1
        if pushed == len(signals) and pushed_all_at is None:
            pushed_all_at = now
            say(f"all {pushed} intents pushed in {now - start:.1f} s")
        if cfg.midrun is not None and midrun is None and pushed >= len(signals) // 2:
            midrun = threading.Thread(target=cfg.midrun, name="drill-midrun", daemon=True)
            midrun.start()
        if kill_every > 0 and now >= next_kill:
            fleet.kill_random(rng, cfg.min_uptime_ms / 1000)
            next_kill = max(next_kill + kill_every, now)
        fleet.revive()
        if pushed_all_at is not None and now - checked >= 0.5:
            checked = now
            res = checks.resolution(store, ids)
            resolved = resolved or res.done
            if int(now - start) // 5 != int(now - start - 0.5) // 5:
                say(f"  {now - start:5.1f} s: {len(ids) - len(res.lost)}/{len(ids)} resolved, "
                    f"{sum(fleet.kills.values())} kills")
        if resolved and now - pushed_all_at >= cfg.chaos_tail_s and (midrun is None or not midrun.is_alive()):
            return
        if now - start > cfg.settle_timeout_s:
            say("chaos phase hit the time limit with intents unresolved")
            return
        time.sleep(0.005)


def _degraded(r) -> list[str]:
    """S5's RECONCILE_DEGRADED alerts: each says which differences made it set REDUCE_ONLY."""
    out = []
    for _id, fields in r.xrange(keys.ALERTS) if r.exists(keys.ALERTS) else []:
        alert = decode(fields).payload
        if getattr(alert, "code", "") == "RECONCILE_DEGRADED":
            out.append(f"{alert.context.get('account_id', '')}: {alert.message}")
    return out


def _user_streams_down(r, accounts: tuple[str, ...]) -> list[str]:
    """The accounts whose futures user-data stream S1 does not report CONNECTED (feeds/role.py, StatusBoard),
    each with S1's status and last error."""
    out = []
    for a in accounts:
        st = {k.decode(): v.decode() for k, v in r.hgetall(keys.s1_stream_status_market(a, "user_fut")).items()}
        if st.get("ws_status") != "CONNECTED":
            out.append(f"{a}: {st.get('ws_status', 'no status')} {st.get('last_error', '')}".strip())
    return out


def _drained(r) -> bool:
    for stream, role in DRAINED:
        try:
            groups = r.xinfo_groups(stream)
        except Exception:  # noqa: BLE001 - the stream does not exist: nothing to drain
            continue
        for g in groups:
            if g["name"] == keys.group(role).encode() and (g["pending"] or g.get("lag")):
                return False
    return True


def _reconcile_until_clean(r, store, fleet: Fleet, deadline: float, settle_s: float, tag: str,
                           account: str = "main") -> dict | None:
    producer = Producer(r, WallClock())
    last = None
    attempt = 0
    while time.monotonic() < deadline:
        run_id = f"drill:{tag}:final:{account}:{attempt}"
        producer.publish(keys.RECON_COMMANDS, Reconcile(scope="ALL", requested_by="drill"), idempotency_key=run_id,
                         account_id=account)
        try:
            last = _until(lambda rid=run_id: store.get(C.STRATEGY_EVENTS, f"RECONCILE_RUN:{rid}"),
                          max(1.0, deadline - time.monotonic()), "reconcile run", fleet.revive)
        except TimeoutError:
            return last
        if last["consistent"] and not last["deferred"]:
            return last
        attempt += 1
        time.sleep(settle_s)
    return last


def run_drill(cfg: DrillConfig) -> DrillReport:
    from chimera.ops.settings import load_settings
    from chimera.ops.streams_admin import init_groups
    from chimera.store import open_store
    from chimera.venues.local.faults import FaultConfig
    from chimera.venues.local.server.app import VenueConfig
    from chimera.venues.local.testing import start_venue
    from chimera.workers.config import activate

    say = cfg.progress or (lambda _msg: None)
    if not 1 <= cfg.accounts <= len(ACCOUNTS):
        raise FatalError(f"--accounts {cfg.accounts}: the drill runs on 1 or {len(ACCOUNTS)} accounts "
                         f"({', '.join(ACCOUNTS)}: the local venue's accounts)")
    accounts = ACCOUNTS[:cfg.accounts]
    root = Path(cfg.data_dir or tempfile.mkdtemp(prefix="chimera-drill-")).resolve()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()
    redis_proc = venue = fleet = None
    try:
        url = cfg.redis_url
        if url is None:
            url, redis_proc = _start_redis(root)
        r = connect(url)
        _prepare_redis(r, cfg.flush, url)
        venue = start_venue(VenueConfig(speed=0, orders_per_10s=1_000_000, orders_per_minute=10_000_000,
                                        weight_per_minute=10_000_000, faults=FaultConfig(seed=cfg.seed)))
        venue.advance(events=40)  # a first price for both symbols
        env = worker_env(url, root, venue.base_url)
        settings = load_settings(env)
        store = open_store(settings.store_url)
        bundle = json.loads(BUNDLE.read_text())
        bundle["reconciler"] = {**bundle.get("reconciler", {}), "interval_ms": cfg.reconcile_interval_ms,
                                "accounts": list(accounts)}
        activate(store, bundle["bundle_id"], 1, bundle)
        init_groups(r, settings)
        signals = write_signals(store, venue, cfg.intents, tag, accounts)
        fleet = Fleet(env, root / "logs", [role for _, role in roles(cfg.s4_replicas)])
        for name, role in roles(cfg.s4_replicas):
            fleet.spawn(name, role)
        venue.control("/chimera/v1/replay", {"speed": cfg.speed})
        venue.control("/chimera/v1/faults", {"error_5xx_share": cfg.error_5xx, "lost_reply_share": cfg.lost_reply,
                                             "ws_drop_every_s": cfg.ws_drop_every_s, "seed": cfg.seed})
        # Warm-up: every worker up and S5's start-up run done, so the chaos hits a working system.
        _until(lambda: store.count(C.STRATEGY_EVENTS, {"kind": "RECONCILE_RUN"}) and all(
            time.monotonic() - p.started > cfg.min_uptime_ms / 1000 for p in fleet.procs.values()), 60,
            "workers did not come up (see the logs)", fleet.revive)
        say(f"{len(fleet.procs)} workers up, venue {venue.base_url}, redis {url}; pushing {cfg.intents} intents")
        _chaos(cfg, r, store, fleet, signals, say)
        faults = venue.control("/chimera/v1/faults", {"error_5xx_share": 0, "lost_reply_share": 0,
                                                      "ws_drop_every_s": 0}).get("injected", {})
        quiet_at = time.monotonic()
        deadline = quiet_at + cfg.settle_timeout_s
        say(f"chaos over after {sum(fleet.kills.values())} kills; waiting for every intent to resolve")
        ids = [sig[0] for sig in signals]
        try:
            _until(lambda: checks.resolution(store, ids).done and _drained(r), deadline - time.monotonic(),
                   "intents resolved", fleet.revive)
        except TimeoutError:
            pass  # reported below with what is missing
        settle_s = bundle["reconciler"].get("settle_ms", 3000) / 1000
        finals = {a: _reconcile_until_clean(r, store, fleet, deadline, settle_s, tag, a) for a in accounts}
        clean = all(f and f["consistent"] and not f["deferred"] for f in finals.values())
        ttc = time.monotonic() - quiet_at if clean else None
        res = checks.resolution(store, ids)
        try:  # vpos books the last reports a moment after S6 (its own group): the invariant once it is drained
            _until(lambda: _drained(r) and not any(checks.virtual_gaps(venue, store, a) for a in accounts),
                   max(5.0, deadline - time.monotonic()), "virtual positions equal the venue", fleet.revive)
        except TimeoutError:
            pass  # reported below
        books: dict = {}

        def books_hold() -> bool:  # S1 may still be catching up on a dropped stream's last trades
            if not _drained(r):
                return False
            books.update({a: checks.books(settings, store, a) for a in accounts})
            if all(c["ok"] for rows in books.values() for c in rows):
                return True
            time.sleep(0.5)
            return False
        # The books need S1's reports of every trade. S1 is SIGKILLed every second or two in the chaos, and
        # its last life may still be backing off from a user-data connect the faults broke (0.5 s doubling to
        # 30 s, backoff.py): a fill's fee reaches its position only once that stream is up and caught up.
        try:
            _until(lambda: not _user_streams_down(r, accounts), USER_STREAMS_UP_S, "S1's user-data streams connected",
                   fleet.revive)
        except TimeoutError:
            pass  # reported below, with S1's own words
        try:
            _until(books_hold, max(5.0, min(BOOKS_SETTLE_S, deadline - time.monotonic())), "the books' identity holds",
                   fleet.revive)
        except TimeoutError:
            pass  # reported below
        report = DrillReport(
            intents=len(ids), resolution=res, orders=checks.entry_orders(venue, res),
            protection=_protection(venue, store, accounts), kills=fleet.kills, crashes=fleet.crashes, faults=faults,
            final_run=finals[accounts[0]], time_to_consistent_s=ttc, elapsed_s=time.monotonic() - started,
            dead_letters=r.xlen(keys.DEAD_LETTER) if r.exists(keys.DEAD_LETTER) else 0, data_dir=str(root),
            accounts=accounts, final_runs=finals, cross_account=checks.cross_account(venue, store),
            quantity_mismatches=[m for a in accounts for m in checks.quantity_mismatches(venue, store, a)],
            virtual_gaps=[g for a in accounts for g in checks.virtual_gaps(venue, store, a)],
            filled_by_account=dict(Counter((store.get(C.ORDER_INTENTS, i) or {}).get("account_id", "main")
                                           for i in res.filled)), books=books, degraded=_degraded(r),
            lost_results=checks.lost_results(r, res.filled), user_streams_down=_user_streams_down(r, accounts))
        report.failures = _failures(report)
        if any(x.startswith("books:") for x in report.failures):
            report.trade_trail = [x for a in accounts for x in checks.trade_trail(r, venue, store, a)]
            report.trade_trail += _log_tail(root / "logs", ("s1", "s6"), 15)
        return report
    finally:
        if fleet is not None:
            fleet.stop()
        if venue is not None:
            venue.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)


def _protection(venue, store, accounts: tuple[str, ...]) -> checks.Protection:
    """Protection per account; with one account exactly ``checks.protection``'s figures."""
    parts = {a: checks.protection(venue, store, a) for a in accounts}
    if len(parts) == 1:
        return parts[accounts[0]]
    return checks.Protection(positions={f"{a}:{s}": v for a, p in parts.items() for s, v in p.positions.items()},
                             uncovered=[f"{a}: {x}" for a, p in parts.items() for x in p.uncovered],
                             store_open=sum(p.store_open for p in parts.values()),
                             extra_stops=sum(p.extra_stops for p in parts.values()))


def _log_tail(logs: Path, names: tuple[str, ...], n: int) -> list[str]:
    """The last ``n`` lines of each worker's log (WARNING and up in the drill): S1's and S6's last words
    say why a report did not reach the books (a failing catch-up, a refused write)."""
    out = []
    for name in names:
        path = logs / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines()[-n:] if path.exists() else ["(no log)"]
        out += [f"{name}.log: {line[:300]}" for line in lines]
    return out


def _failures(rep: DrillReport) -> list[str]:
    out = [f"lost: {x}" for x in rep.resolution.lost]
    if rep.orders.duplicates:
        out.append(f"{rep.orders.duplicates} duplicate entry orders at the venue")
    out += [f"intent {x} FILLED in the store, no entry order at the venue" for x in rep.orders.missing]
    out += [f"intent {x} REJECTED in the store, yet its entry order is at the venue" for x in rep.orders.phantom]
    out += [f"unprotected: {x}" for x in rep.protection.uncovered]
    out += [f"cross-account order: {x}" for x in rep.cross_account]
    out += [f"quantity mismatch: {x}" for x in rep.quantity_mismatches]
    out += [f"virtual positions: {x}" for x in rep.virtual_gaps]
    out += [f"books: {a} {c['id']}: expected {c['expected']}, actual {c['actual']}"
            + (f" ({c['detail']})" if c.get("detail") else "")
            for a, rows in rep.books.items() for c in rows if not c["ok"]]
    out += [f"books: {a} not read (the streams did not drain)" for a in rep.accounts if a not in rep.books]
    out += [f"S1 user data not CONNECTED {USER_STREAMS_UP_S:.0f} s after the chaos: {x}" for x in rep.user_streams_down]
    if rep.time_to_consistent_s is None:
        out += [f"no S5 run with zero differences for {a}; last: {(f or {}).get('summary')}"
                for a, f in (rep.final_runs or {"main": rep.final_run}).items()
                if not (f and f["consistent"] and not f["deferred"])]
    if not rep.resolution.filled:
        out.append("no intent filled: the drill exercised nothing")
    return out
