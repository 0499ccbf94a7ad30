"""Authentication against real Redis (single + cluster): expiry, revocation, refresh rotation, lockout,
service tokens, rate limits, and secrets never leaving the gateway."""

from __future__ import annotations

import json
import logging

import pytest
from litestar.testing import TestClient

from chimera.gateway.auth import add_service, ensure_first_admin, load_auth_config
from chimera.store import open_store
from chimera.store.collections import USERS
from chimera.streams import keys
from tests.support.gateway import PASSWORD, ManualClock, bearer, gateway_app, login


@pytest.fixture
def clock():
    return ManualClock(1_700_000_000_000)


@pytest.fixture
def gw(r, settings, clock):
    app, store = gateway_app(settings, r, clock=clock, access_ttl_s=60, lockout_after=3, rate_per_min=1000)
    with TestClient(app) as c:
        c.store = store
        yield c


def me(c, token: str):
    return c.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


def test_login_gives_a_working_short_lived_token_that_expires(gw, clock):
    tok = login(gw, "trader")
    assert tok["expires_in"] == 60 and tok["role"] == "trader"
    assert me(gw, tok["access_token"]).json() == {"name": "trader", "role": "trader", "kind": "human"}
    clock.set(clock.now_ms() + 61_000)
    resp = me(gw, tok["access_token"])
    assert resp.status_code == 401 and resp.json()["error"] == "TOKEN_EXPIRED"
    # A tampered token (other signing key) is refused too.
    forged = tok["access_token"][:-4] + ("AAAA" if not tok["access_token"].endswith("AAAA") else "BBBB")
    assert me(gw, forged).json()["error"] == "INVALID_TOKEN"


def test_wrong_password_and_unknown_user_answer_the_same(gw):
    a = gw.post("/v1/auth/login", json={"username": "trader", "password": "nope-nope"})
    b = gw.post("/v1/auth/login", json={"username": "ghost", "password": "nope-nope"})
    assert a.status_code == b.status_code == 401 and a.json() == b.json()


def test_logout_revokes_the_access_token_in_redis(gw, r):
    tok = login(gw, "viewer")
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    assert gw.post("/v1/auth/logout", headers=h).status_code == 200
    resp = me(gw, tok["access_token"])
    assert resp.status_code == 401 and resp.json()["error"] == "TOKEN_REVOKED"
    jti = [k for k in r.scan_iter(match="gw:{auth}:revoked:*")] if not hasattr(r, "get_primaries") else \
        [k for k in r.scan_iter(match="gw:{auth}:revoked:*", target_nodes="primaries")]
    assert len(jti) == 1 and 0 < r.ttl(jti[0]) <= 60
    # The refresh token of that session is dead as well.
    assert gw.post("/v1/auth/refresh", json={"refresh_token": tok["refresh_token"]}).status_code == 401


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(gw):
    first = login(gw, "risk")
    second = gw.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"] and me(gw, second["access_token"]).status_code == 200
    # The old refresh token was used once: showing it again is theft, so the whole family ends.
    again = gw.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 401 and again.json()["error"] == "INVALID_REFRESH_TOKEN"
    assert me(gw, second["access_token"]).json()["error"] == "TOKEN_REVOKED"
    assert gw.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401


def test_lockout_after_repeated_failures_even_with_the_right_password(gw, r):
    for _ in range(3):
        assert gw.post("/v1/auth/login", json={"username": "admin", "password": "wrong-pass"}).status_code == 401
    resp = gw.post("/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert resp.status_code == 423 and resp.json()["error"] == "ACCOUNT_LOCKED"
    assert 0 < r.ttl(keys.gw_lockout("admin")) <= 900
    assert login(gw, "admin2")["role"] == "admin"  # other users unaffected
    r.delete(keys.gw_lockout("admin"))  # the lock expiring
    assert login(gw, "admin")["role"] == "admin"


def test_service_token_authenticates_a_machine_and_can_be_disabled(gw):
    token = add_service(gw.store, "s6-bot", "risk")
    h = {"Authorization": f"Bearer {token}"}
    assert gw.get("/v1/auth/me", headers=h).json() == {"name": "s6-bot", "role": "risk", "kind": "service"}
    assert gw.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    doc = gw.store.get(USERS, "s6-bot")
    assert token.split(".", 1)[1] not in json.dumps(doc)  # only its SHA-256 is stored
    gw.store.update_if(USERS, "s6-bot", {"disabled": True}, {"name": "s6-bot"})
    assert gw.get("/v1/auth/me", headers=h).status_code == 401


def test_rate_limit_per_user(r, settings):
    app, _ = gateway_app(settings, r, rate_per_min=5)
    with TestClient(app) as c:
        h = bearer(c, "viewer")
        codes = [c.get("/v1/positions", headers=h).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        assert c.get("/v1/positions", headers=bearer(c, "trader")).status_code == 200  # per user


def test_first_admin_gets_a_one_time_password_once(settings, tmp_path):
    store = open_store(settings.store_url)
    env = {"CHIMERA_SECRETS_FILE": str(tmp_path / "secrets.json")}
    pw = ensure_first_admin(store, env=env)
    assert pw and len(pw) >= 12 and store.get(USERS, "admin")["must_change"] is True
    assert pw not in json.dumps(store.get(USERS, "admin"))  # argon2 hash only
    assert store.get(USERS, "admin")["pw_hash"].startswith("$argon2id$")
    assert ensure_first_admin(store, env=env) is None


def test_one_time_password_must_be_replaced_and_can_be(gw):
    pw = ensure_first_admin(gw.store, name="boss", env={"CHIMERA_SECRETS_FILE": "/nonexistent/x.json"}) \
        if not gw.store.query(USERS, {"role": "admin"}) else None
    assert pw is None  # an admin already exists in this fixture: nothing created
    tok = login(gw, "viewer")
    assert tok["must_change"] is False
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    bad = gw.post("/v1/auth/password", json={"old_password": "nope-nope", "new_password": "brand new pw"}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "old_password"
    ok = gw.post("/v1/auth/password", json={"old_password": PASSWORD, "new_password": "brand new pw"}, headers=h)
    assert ok.status_code == 200
    assert gw.post("/v1/auth/login", json={"username": "viewer", "password": PASSWORD}).status_code == 401
    assert login(gw, "viewer", "brand new pw")["role"] == "viewer"


def test_signing_key_comes_from_env_or_a_0600_secrets_file(tmp_path):
    assert load_auth_config({"CHIMERA_JWT_SECRET": "from-env-0123456789"}).jwt_secret == "from-env-0123456789"
    path = tmp_path / "secrets.json"
    cfg = load_auth_config({"CHIMERA_SECRETS_FILE": str(path)})
    assert json.loads(path.read_text())["jwt_secret"] == cfg.jwt_secret and (path.stat().st_mode & 0o777) == 0o600
    assert load_auth_config({"CHIMERA_SECRETS_FILE": str(path)}).jwt_secret == cfg.jwt_secret  # stable


def test_secrets_never_in_responses_config_or_logs(gw, caplog, settings):
    gw.app.state.chimera.settings.extra["treasury"] = {"api_secret": "S3CR3T-api", "limits": {"USDT": "10"}}
    secret = gw.app.state.chimera.auth.cfg.jwt_secret
    caplog.set_level(logging.DEBUG)
    tok = login(gw, "admin")
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    bodies = [gw.get(p, headers=h).text for p in ("/v1/config", "/v1/auth/me", "/v1/approvals", "/schema/openapi.json")]
    bodies.append(gw.post("/v1/auth/login", json={"username": "admin", "password": "wrong-pass"}).text)
    cfg = gw.get("/v1/config", headers=h).json()
    assert cfg["auth"]["jwt_secret"] == "***" and cfg["settings"]["extra"]["treasury"]["api_secret"] == "***"
    for text in [*bodies, caplog.text]:
        assert secret not in text and PASSWORD not in text and "S3CR3T-api" not in text and "wrong-pass" not in text
    # The audit log keeps no password either.
    from chimera.store.collections import AUDIT_LOG
    assert PASSWORD not in json.dumps(gw.store.query(AUDIT_LOG))
