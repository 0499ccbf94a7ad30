"""Gateway test helpers: an app on the test Redis + SQLite store with one user per role."""

from __future__ import annotations

import secrets

from chimera.gateway.app import create_app
from chimera.gateway.auth import ROLES, AuthConfig, add_user
from chimera.store import open_store
from chimera.workers.clock import ManualClock, WallClock

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


__all__ = ["ManualClock", "PASSWORD", "USERS", "bearer", "gateway_app", "login", "test_auth_config"]
