"""``chimera up``: the local stack for the demo, supervised in one terminal.

Starts (each as its own process, like production): ``redis-server`` (unless CHIMERA_REDIS_URL is
set; AOF on, so a second run resumes), the local venue replaying the shipped real sample (state
file, so it resumes too), the scheduler, and every role that is built. Shows a progress bar for
the replay and a live line of what the system is doing, and each worker's /metrics address. The
first run also creates the gateway's signing key (``CHIMERA_SECRETS_FILE``, default
``<data-dir>/secrets.json``) and user ``admin`` with a one-time password, printed once with the UI
address.

Ctrl-C stops in dependency order: the workers first (SIGTERM: each finishes the entry in hand and
acks it while Redis is still there), then the venue, then Redis (which writes its AOF on the way
down), within ``STOP_BUDGET_S`` in all. Between the workers and the venue it prints each account's
books' identity (``chimera books``, chimera/ops/books.py), bounded by ``BOOKS_BUDGET_S``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from chimera.errors import FatalError
from chimera.ops.loopback import free_port
from chimera.workers.registry import ROLES

# Start order: producers last, so consumers have their groups before the data flows (S11 and the
# notifier watch everything, the research roles S7-S10 consume what S3/S6 publish).
ROLE_ORDER = ("scheduler", "s11", "notifier", "s10", "s9", "s8", "s7", "s6", "vpos", "s4", "s5", "s3", "s2", "s1", "s12")
# Stop order: what depends on something stops before it. Workers, then the venue, then Redis.
INFRA = ("venue", "redis")
STOP_BUDGET_S = 4.0  # all of it (the process exit follows); what outlives its share is killed
STOP_RESERVE_S = {"workers": 1.0, "venue": 0.4, "redis": 0.0}  # kept back for the groups after it
BOOKS_BUDGET_S = 1.0  # the books' identity between the workers and the venue; said so when it cannot finish


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.signalled_at = time.monotonic()
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def check(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is not None]

    def stop(self, after_workers: Callable[[float], None] | None = None) -> None:
        """Workers (all at once), then the venue, then Redis; whatever outlives its share is killed.

        Each group may use what is left of ``STOP_BUDGET_S`` minus what the groups after it need,
        so a quick group leaves more time to the next one (the venue writes its state file).
        ``after_workers(budget_s)`` runs once the workers are down, while the venue still answers.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the ordered stop short
            signal.signal(sig, signal.SIG_IGN)
        started = time.monotonic()
        end = started + STOP_BUDGET_S
        groups = [("workers", [(n, p) for n, p in self.procs if n not in INFRA])]
        groups += [(name, [(n, p) for n, p in self.procs if n == name]) for name in INFRA]
        for group, procs in groups:
            budget = max(0.2, end - time.monotonic() - STOP_RESERVE_S[group])
            killed = self._stop_group(procs, budget)
            note = f" (killed after {budget:.1f}s: {', '.join(killed)})" if killed else ""
            print(f"stopped {group} at {time.monotonic() - started:.1f}s{note}", flush=True)
            if group == "workers" and after_workers is not None:
                after_workers(max(0.2, min(BOOKS_BUDGET_S, end - time.monotonic() - STOP_RESERVE_S["workers"])))

    @staticmethod
    def _stop_group(procs: list[tuple[str, subprocess.Popen]], budget_s: float) -> list[str]:
        for _name, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + budget_s
        killed = []
        for name, proc in procs:
            try:
                proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed.append(name)
        return killed


def _wait_http(url: str, seconds: float) -> dict:
    end = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return json.loads(resp.read())
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.2)
    raise FatalError(f"{url} did not answer within {seconds:.0f}s: {last}")


def _start_redis(stack: Stack, port: int) -> str:
    if not shutil.which("redis-server"):
        raise FatalError("redis-server is not installed: run ./scripts/demo.sh (it installs it) or set CHIMERA_REDIS_URL")
    rdir = stack.data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    stack.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(rdir),
                          "--appendonly", "yes", "--save", ""], dict(os.environ))
    import redis

    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            redis.Redis(port=port).ping()
            return f"redis://127.0.0.1:{port}/0"
        except Exception:
            time.sleep(0.1)
    raise FatalError(f"redis-server did not start on port {port} (see {stack.logs / 'redis.log'})")


def _status_line(store, clock: dict) -> str:
    def count(coll: str, where: dict | None = None) -> int:
        try:
            return store.count(coll, where)
        except Exception:
            return 0

    progress = float(clock.get("progress") or 0.0)
    width = 24
    bar = "#" * int(progress * width) + "-" * (width - int(progress * width))
    t = time.strftime("%Y-%m-%d %H:%M", time.gmtime((clock.get("time_ms") or 0) / 1000))
    return (f"\rreplay [{bar}] {progress:6.1%} {t} | signals {count('signals')} | "
            f"orders {count('orders')} | fills {count('fills')} | open positions "
            f"{count('positions', {'state': 'ACTIVE'})}   ")


SAMPLE_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "sample_vol_breakout.json"


def _ensure_active_bundle(store_url: str) -> None:
    """A first run activates the shipped SAMPLE bundle, so the demo trades; later runs keep theirs."""
    from chimera.store import open_store
    from chimera.workers.config import activate

    store = open_store(store_url)
    if store.get("config_active", "active") is None:
        bundle = json.loads(SAMPLE_BUNDLE.read_text())
        activate(store, bundle["bundle_id"], 1, bundle)
        print(f"activated the sample strategy bundle {bundle['bundle_id']} rev 1 (a demonstration, not advice)")
    store.close()


def _first_admin(store_url: str, env: dict) -> str | None:
    """The first run creates user ``admin`` with a one-time password (to be changed at first sign-in)
    and the gateway's signing key in the secrets file; later runs return None."""
    from chimera.gateway.auth import ensure_first_admin, load_auth_config
    from chimera.store import open_store

    load_auth_config(env)  # writes the JWT key into CHIMERA_SECRETS_FILE now, not racing the gateway
    store = open_store(store_url)
    try:
        return ensure_first_admin(store, env=env, now_ms=int(time.time() * 1000))
    finally:
        store.close()


def _books_at_stop(env: dict) -> Callable[[float], None]:
    """Prepared while the stack runs (settings, accounts, the SDK imported), so the shutdown only reads."""
    from chimera.ops import books
    from chimera.ops.settings import load_settings
    from chimera.venues.accounts import load_accounts
    from chimera.venues.binance.adapter import venue_from_settings

    try:
        settings = load_settings(env)
        accounts = [a.account_id for a in load_accounts(settings.accounts_file or None, settings.venue) if a.enabled]
        venue_from_settings(settings, accounts[0])  # imports the SDK now, not on the shutdown's clock
    except FatalError as exc:
        why = str(exc)  # ``exc`` is unbound once the except block ends
        return lambda _budget_s: print(f"books: not checked ({why})", flush=True)

    def run(budget_s: float) -> None:
        good, lines = books.bounded(settings, env["CHIMERA_STORE_URL"], accounts, budget_s)
        print("books: venue wallet change = Σ realized − fees + funding over the store's positions; fills = trades"
              + ("" if good is not False else " (a trade in flight at the stop is booked by the next run)"), flush=True)
        for line in lines:
            print(f"  {line}", flush=True)
    return run


def run_stack(*, speed: float, api_port: int, venue_port: int, data_dir: str, redis_port: int = 6390,
              venue_args: list[str] | None = None, extra_env: dict | None = None) -> int:
    from chimera.store import open_store

    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    stack = Stack(root)
    env = dict(os.environ)
    env.setdefault("CHIMERA_STORE_URL", f"sqlite:///{root}/chimera.sqlite")
    env.setdefault("CHIMERA_OBJECTS_URL", f"file://{root}/objects")
    env["CHIMERA_VENUE"] = env.get("CHIMERA_VENUE", "paper")
    env["CHIMERA_VENUE_URL"] = f"http://127.0.0.1:{venue_port}"
    env["CHIMERA_API_PORT"] = str(api_port)
    env.setdefault("CHIMERA_LOG_JSON", "1")
    env.setdefault("CHIMERA_USER_DATA", "1")  # S1 follows fills and stop triggers at the venue
    # The gateway's JWT key and the first admin's password (if given) live here, mode 0600.
    env.setdefault("CHIMERA_SECRETS_FILE", str(root / "secrets.json"))
    env.update(extra_env or {})  # a replay of the user's data: event time (chimera/ops/replay_up.py)
    def interrupt(_signum, _frame):
        stack.signalled_at = time.monotonic()
        raise KeyboardInterrupt

    # Ctrl-C, and SIGTERM from a supervisor (or SIGINT when started in the background, where it is
    # ignored by default): the same ordered stop.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    books_at_stop = None
    try:
        if "CHIMERA_REDIS_URL" not in os.environ:
            env["CHIMERA_REDIS_URL"] = _start_redis(stack, redis_port)
        _ensure_active_bundle(env["CHIMERA_STORE_URL"])
        admin_password = _first_admin(env["CHIMERA_STORE_URL"], env)
        cli = [sys.executable, "-m", "chimera.ops.cli"]
        stack.start("venue", [*cli, "venue", "serve", "--port", str(venue_port), "--speed", str(speed),
                              "--state", str(root / "venue-state.json"), *(venue_args or [])], env)
        _wait_http(f"http://127.0.0.1:{venue_port}/chimera/v1/clock", 60)
        books_at_stop = _books_at_stop(env)
        metrics = {}
        for code in ROLE_ORDER:
            # Each worker serves /metrics, /health, /ready on its own port (the gateway on the API port).
            port = metrics[code] = free_port() if code != "s12" else api_port
            stack.start(code, [*cli, "worker", "--role", code], {**env, "CHIMERA_METRICS_PORT": str(port)})
        names = {r.code: r.name for r in ROLES}
        print(f"Chimera is up (data in {root}, logs in {stack.logs})")
        print(f"  redis   {env['CHIMERA_REDIS_URL']}")
        print(f"  venue   http://127.0.0.1:{venue_port}  (Binance REST/WS on loopback, replay x{speed:g})")
        print(f"  roles   {', '.join(f'{c} {names[c]}' for c in ROLE_ORDER)}")
        print(f"  UI      http://127.0.0.1:{api_port}/ui")
        print(f"  API     http://127.0.0.1:{api_port}  (OpenAPI: http://127.0.0.1:{api_port}/schema)")
        if admin_password:
            print(f"  first sign-in: user admin, one-time password {admin_password} (shown once; replace "
                  "it: POST /v1/auth/password)")
        for code in ROLE_ORDER:
            if code != "s12":
                print(f"  {code:<7} http://127.0.0.1:{metrics[code]}/metrics  (/health, /ready)")
        print("Ctrl-C stops everything; running `chimera up` again resumes from the stored state.")
        store = open_store(env["CHIMERA_STORE_URL"])
        while True:
            dead = stack.check()
            if dead:
                print(f"\nprocess(es) exited: {', '.join(dead)}; see {stack.logs}")
                return 1
            try:
                clock = _wait_http(f"http://127.0.0.1:{venue_port}/chimera/v1/clock", 5)
            except FatalError:
                clock = {}
            sys.stdout.write(_status_line(store, clock))
            sys.stdout.flush()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print(f"\nstopping... ({time.monotonic() - stack.signalled_at:.1f}s after the signal)", flush=True)
        return 0
    finally:
        stack.stop(books_at_stop)
