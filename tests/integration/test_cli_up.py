"""``chimera up``: every worker prints and serves its /metrics; Ctrl-C stops workers, venue, Redis in < 5 s."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from chimera.ops.up import ROLE_ORDER
from tests.support.polling import wait_until
from tests.support.redis_servers import free_port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_prints_worker_addresses_and_stops_in_order_within_5s(tmp_path):
    venue, api, redis_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}
    env.update(CHIMERA_LOG_JSON="1", CHIMERA_LOG_LEVEL="INFO")
    up = subprocess.Popen([sys.executable, "-m", "chimera.ops.cli", "up", "--data-dir", str(tmp_path),
                           "--venue-port", str(venue), "--api-port", str(api), "--redis-port", str(redis_port)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(up.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: up.poll() is not None or any("Ctrl-C stops everything" in line for line in out),
                   timeout=240, interval=0.1, message="chimera up started")
        assert up.poll() is None, "".join(out)
        addresses = dict(re.findall(r"^  (s\d+|scheduler|notifier|vpos)\s+(http://127\.0\.0\.1:\d+)/metrics",
                                    "".join(out), re.M))
        # Every built role runs (the gateway answers on the API port instead of a metrics line).
        assert set(addresses) == set(ROLE_ORDER) - {"s12"}, "".join(out)
        assert {"s7", "s8", "s9", "s10", "s11", "notifier"} <= set(addresses)
        text = "".join(out)
        assert f"  UI      http://127.0.0.1:{api}/ui" in text, text
        password = re.search(r"first sign-in: user admin, one-time password (\S+)", text)
        assert password, text
        # The printed password is the admin's: the gateway signs them in (and says it must be changed).
        try:
            login = wait_until(lambda: up.poll() is None and _post(f"http://127.0.0.1:{api}/v1/auth/login",
                                                                   {"username": "admin", "password": password.group(1)}),
                               timeout=60, message="gateway login")
        except AssertionError as exc:  # say why: the gateway's own log (a port taken, a crash at start)
            log = Path(tmp_path, "logs", "s12.log")
            raise AssertionError(f"{exc}; up exited: {up.poll()}; s12.log: "
                                 f"{log.read_text()[-3000:] if log.exists() else '(none)'}") from exc
        assert login.status_code == 200 and login.json()["must_change"] is True, login.text
        # Every started role shows a heartbeat in /v1/ops/health (its consumers reading in Redis), the
        # scheduler holds its lease and S1 reports main's streams connected.
        token = {"Authorization": f"Bearer {login.json()['access_token']}"}

        def healthy():
            resp = _get_json(f"http://127.0.0.1:{api}/v1/ops/health", token)
            checks = {c["name"]: c["status"] for c in (resp or {}).get("checks", [])}
            want = [f"heartbeat:{c}" for c in addresses] + ["account_streams:main"]
            return all(checks.get(n) == "OK" for n in want) and checks
        checks = wait_until(healthy, timeout=120, interval=0.5, message="every role's heartbeat in /v1/ops/health")
        assert checks["redis"] == "OK" and checks["store"] == "OK"
        # Shown once on the terminal, never written to a log.
        assert not [p.name for p in Path(tmp_path, "logs").glob("*.log") if password.group(1) in p.read_text()]
        secrets_file = Path(tmp_path, "secrets.json")
        assert secrets_file.stat().st_mode & 0o077 == 0 and "jwt_secret" in secrets_file.read_text()
        for role, url in addresses.items():
            page = wait_until(lambda url=url: _get(f"{url}/metrics"), timeout=60, message=f"{role} /metrics")
            assert page.status_code == 200 and "chimera_" in page.text, role
            # Ready: Redis and the store answer, and the worker is past its start-up.
            wait_until(lambda url=url: _ready(url), timeout=60, message=f"{role} /ready")
        ports = [int(url.rsplit(":", 1)[1]) for url in addresses.values()] + [venue, redis_port]

        started = time.monotonic()
        up.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert up.wait(15) == 0, "".join(out)
        took = time.monotonic() - started
        assert took < 5.0, f"shutdown took {took:.1f}s: " + "".join(out)
        assert not [p for p in ports if _listening(p)], "something still listens after chimera up exited"
    finally:
        if up.poll() is None:
            up.kill()
    logs = Path(tmp_path, "logs")
    text = "".join(out)
    stages = re.findall(r"^stopped (workers|venue|redis) at", text, re.M)
    assert stages == ["workers", "venue", "redis"], text
    # The books' identity of each account, read from the venue once the workers are down and before it stops.
    shutdown = text[text.index("stopped workers at"):text.index("stopped venue at")]
    books = re.findall(r"^  ([✓✗]) (main|sub1) (venue_identity|fills_one_to_one|store_identity): .*"
                       r"expected (-?[\d.E-]+), actual (-?[\d.E-]+)$", shutdown, re.M)
    assert {(acc, cid) for _, acc, cid, *_ in books} == {(a, c) for a in ("main", "sub1") for c in (
        "venue_identity", "fills_one_to_one", "store_identity")}, text
    # sub1 never traded: nothing at the venue, nothing in the store.
    assert all(mark == "✓" and e == a for mark, acc, _, e, a in books if acc == "sub1"), text
    killed = re.search(r"^stopped workers at .*killed after [\d.]+s: ([\w, ]+)\)", text, re.M)
    killed = set(killed.group(1).split(", ")) if killed else set()
    for role in ("s2", "s3", "s4", "s5", "s6"):
        log = (logs / f"{role}.log").read_text()
        # Stopped while Redis was still up: a clean exit (or, past its share of the 5 s, killed and
        # said so: a long entry in hand is redelivered later), never connection errors on the way down.
        assert "stopped after" in log or role in killed, role
        assert not re.search(r"redis unavailable|ConnectionError|Connection refused", log), role
    assert "ready to exit" in (logs / "redis.log").read_text()  # Redis shut down cleanly (AOF written)


def _get(url: str):
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def _post(url: str, body: dict):
    try:
        return httpx.post(url, json=body, timeout=5)
    except httpx.TransportError:
        return None


def _get_json(url: str, headers: dict):
    try:
        resp = httpx.get(url, headers=headers, timeout=5)
    except httpx.TransportError:
        return None
    return resp.json() if resp.status_code == 200 else None


def _ready(url: str) -> bool:
    resp = _get(f"{url}/ready")
    return resp is not None and resp.status_code == 200
