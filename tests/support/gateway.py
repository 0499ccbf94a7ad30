"""Gateway test helpers: an app on the test Redis + SQLite store with one user per role."""

from __future__ import annotations

import contextlib
import secrets
import threading

from argon2 import PasswordHasher, profiles

from chimera.gateway import auth as _auth
from chimera.gateway.app import create_app
from chimera.gateway.auth import ROLES, AuthConfig, add_user
from chimera.store import open_store
from chimera.workers.clock import ManualClock, WallClock

# Test speed only: the same argon2id hashes and checks, at the smallest cost (the default costs ~1 s
# per hash on a busy 2-core machine, and every gateway fixture creates six users).
_auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)

PASSWORD = "correct horse battery"  # test-only users, created per test
USERS = {role: role for role in ROLES} | {"admin2": "admin", "risk2": "risk"}


def test_auth_config(**kw) -> AuthConfig:
    return AuthConfig(jwt_secret=secrets.token_urlsafe(32), **({"rate_per_min": 100_000} | kw))


def gateway_app(settings, r, *, clock=None, **auth_kw):
    store = open_store(settings.store_url)
    for name, role in USERS.items():
        add_user(store, name, role, PASSWORD)
    app = create_app(settings, r=r, store=store, clock=clock or WallClock(), auth_config=test_auth_config(**auth_kw))
    return app, store


def login(client, name: str, password: str = PASSWORD) -> dict:
    resp = client.post("/v1/auth/login", json={"username": name, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()


def bearer(client, name: str) -> dict:
    return {"Authorization": f"Bearer {login(client, name)['access_token']}"}


__all__ = ["ManualClock", "PASSWORD", "USERS", "bearer", "gateway_app", "login", "served", "test_auth_config"]


@contextlib.contextmanager
def served(app, timeout: float = 30):
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import httpx
    import uvicorn

    from chimera.venues.local.testing import free_port
    from tests.support.polling import wait_until

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=2))
    t = threading.Thread(target=server.run, daemon=True, name="gateway-under-test")
    t.start()
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(f"{base}/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=timeout, interval=0.1, message="gateway up")
    try:
        yield base
    finally:
        server.should_exit = True
        t.join(15)
