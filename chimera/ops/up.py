"""``chimera up``: the local stack for the demo, supervised in one terminal.

Starts (each as its own process, like production): ``redis-server`` (unless CHIMERA_REDIS_URL is
set; AOF on, so a second run resumes), the local venue replaying the shipped real sample (state
file, so it resumes too), the scheduler, and every role that is built. Shows a progress bar for
the replay and a live line of what the system is doing. Ctrl-C stops everything, newest first.
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
from pathlib import Path

from chimera.errors import FatalError
from chimera.workers.registry import ROLES, is_built

# Start order: producers last, so consumers have their groups before the data flows.
ROLE_ORDER = ("scheduler", "s6", "s4", "s5", "s3", "s2", "s1", "s12")


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def check(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


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


def run_stack(*, speed: float, api_port: int, venue_port: int, data_dir: str) -> int:
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
    try:
        if "CHIMERA_REDIS_URL" not in os.environ:
            env["CHIMERA_REDIS_URL"] = _start_redis(stack, 6390)
        _ensure_active_bundle(env["CHIMERA_STORE_URL"])
        cli = [sys.executable, "-m", "chimera.ops.cli"]
        stack.start("venue", [*cli, "venue", "serve", "--port", str(venue_port), "--speed", str(speed),
                              "--state", str(root / "venue-state.json")], env)
        _wait_http(f"http://127.0.0.1:{venue_port}/chimera/v1/clock", 60)
        started, missing = [], []
        for code in ROLE_ORDER:
            if is_built(code):
                stack.start(code, [*cli, "worker", "--role", code], env)
                started.append(code)
            else:
                missing.append(code)
        names = {r.code: r.name for r in ROLES}
        print(f"Chimera is up (data in {root}, logs in {stack.logs})")
        print(f"  redis   {env['CHIMERA_REDIS_URL']}")
        print(f"  venue   http://127.0.0.1:{venue_port}  (Binance REST/WS on loopback, replay x{speed:g})")
        print(f"  roles   {', '.join(f'{c} {names[c]}' for c in started)}")
        if "s12" in started:
            print(f"  API     http://127.0.0.1:{api_port}  (OpenAPI: http://127.0.0.1:{api_port}/schema)")
        if missing:
            print(f"  not yet {', '.join(f'{c} {names[c]}' for c in missing)} (see the README's roadmap)")
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
        print("\nstopping...")
        return 0
    finally:
        stack.stop()
