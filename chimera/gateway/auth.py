"""S12 authentication: users (argon2), JWT access tokens, rotating refresh tokens, lockout, service tokens.

* People log in with a password (argon2id hash in ``users/<name>``) and get a short-lived JWT
  access token (HS256, ``jti``) plus an opaque refresh token. A refresh token is used once: the
  answer carries a new one and the old one is deleted; presenting a rotated token again is taken
  as theft and revokes its whole family. Logout revokes the access token's ``jti`` (a Redis key
  whose TTL is the token's remaining life) and the refresh family.
* ``LOCKOUT_AFTER`` failed logins in ``LOCKOUT_WINDOW_S`` lock the user for ``LOCKOUT_S``.
* Machines (S6's transfer requests, CI) use service tokens ``svc_<name>.<secret>``; only the
  secret's SHA-256 is stored, the token is shown once.
* Secrets (the signing key, the first admin's password) come from the environment or the secrets
  file, never from code: ``CHIMERA_JWT_SECRET`` / ``CHIMERA_SECRETS_FILE`` (JSON ``{"jwt_secret":
  ..., "admin_password": ...}``). With neither, a random key is generated once into the secrets
  file (mode 0600, default ``var/secrets.json``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from loguru import logger

from chimera.errors import FatalError
from chimera.gateway.errors import ApiError
from chimera.store.collections import USERS
from chimera.streams import keys

ROLES = ("viewer", "trader", "risk", "admin")
ALGORITHM = "HS256"
DEFAULT_SECRETS_FILE = "var/secrets.json"
PLACEHOLDER = "REPLACE_ME"
_hasher = PasswordHasher()


@dataclass
class AuthConfig:
    jwt_secret: str
    access_ttl_s: int = 900
    refresh_ttl_s: int = 7 * 24 * 3600
    lockout_after: int = 5
    lockout_window_s: int = 900
    lockout_s: int = 900
    rate_per_min: int = 600
    approval_ttl_s: int = 24 * 3600
    cookie_secure: bool = False
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    kind: str = "human"  # human | service
    jti: str = ""
    exp: int = 0
    via_cookie: bool = False


def _secrets_path(env: dict) -> Path:
    return Path(env.get("CHIMERA_SECRETS_FILE") or DEFAULT_SECRETS_FILE)


def read_secrets(env: dict | None = None) -> dict:
    env = dict(os.environ if env is None else env)
    path = _secrets_path(env)
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ApiError(500, "SECRETS_UNREADABLE", f"secrets file {path} is not JSON ({exc}); fix or remove it") from None
    return {}


def load_auth_config(env: dict | None = None) -> AuthConfig:
    """Signing key from CHIMERA_JWT_SECRET, else the secrets file (created with a random key if absent)."""
    env = dict(os.environ if env is None else env)
    secret = env.get("CHIMERA_JWT_SECRET") or read_secrets(env).get("jwt_secret")
    if secret == PLACEHOLDER:  # deploy/k8s ships this in the chimera-secrets Secret until someone sets it
        raise FatalError("CHIMERA_JWT_SECRET is still the placeholder REPLACE_ME: set one random value shared by "
                         "every gateway replica (python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
                         "or leave it empty to generate one into CHIMERA_SECRETS_FILE (a single replica)")
    if not secret:
        path = _secrets_path(env)
        data = read_secrets(env)
        data["jwt_secret"] = secrets.token_urlsafe(48)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        logger.info("gateway: generated a JWT signing key into {} (mode 0600)", path)
        secret = data["jwt_secret"]

    def num(name: str, default: int) -> int:
        raw = env.get(name)
        return int(raw) if raw else default

    return AuthConfig(jwt_secret=secret, access_ttl_s=num("CHIMERA_JWT_ACCESS_TTL_S", 900),
                      refresh_ttl_s=num("CHIMERA_JWT_REFRESH_TTL_S", 7 * 24 * 3600),
                      rate_per_min=num("CHIMERA_RATE_LIMIT_PER_MIN", 600),
                      cookie_secure=env.get("CHIMERA_COOKIE_SECURE", "") in ("1", "true", "yes"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _s(v) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


# --- users ------------------------------------------------------------------------------------------


def add_user(store, name: str, role: str, password: str | None = None, *, now_ms: int = 0,
             must_change: bool = False) -> str:
    """Create (or reset) a person; returns the password (generated when not given)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"user name {name!r}: letters, digits, - and _ only")
    password = password or secrets.token_urlsafe(12)
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    store.upsert(USERS, name, {"name": name, "role": role, "kind": "human", "pw_hash": _hasher.hash(password),
                               "disabled": False, "must_change": must_change, "created_at": now_ms})
    return password


def add_service(store, name: str, role: str, *, now_ms: int = 0) -> str:
    """Create a machine caller; returns its token ``svc_<name>.<secret>`` (shown once)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
    secret = secrets.token_urlsafe(32)
    store.upsert(USERS, name, {"name": name, "role": role, "kind": "service", "token_sha256": _sha(secret),
                               "disabled": False, "created_at": now_ms})
    return f"svc_{name}.{secret}"


def ensure_first_admin(store, name: str = "admin", env: dict | None = None, now_ms: int = 0) -> str | None:
    """For ``chimera up``: with no admin yet, create ``name`` and return its one-time password.

    The password is ``admin_password`` of the secrets file / CHIMERA_ADMIN_PASSWORD when set,
    else generated; the user must change it (``must_change``). None when an admin exists.
    """
    if any(u.get("role") == "admin" and u.get("kind") == "human" for u in store.query(USERS, {"role": "admin"})):
        return None
    env = dict(os.environ if env is None else env)
    given = env.get("CHIMERA_ADMIN_PASSWORD") or read_secrets(env).get("admin_password")
    return add_user(store, name, "admin", given or None, now_ms=now_ms, must_change=True)


def _user(store, name: str) -> dict | None:
    doc = store.get(USERS, name)
    return doc if doc and not doc.get("disabled") else None


# --- login, tokens ----------------------------------------------------------------------------------


class Auth:
    def __init__(self, cfg: AuthConfig, r, store, clock) -> None:
        self.cfg, self.r, self.store, self.clock = cfg, r, store, clock

    def now_s(self) -> int:
        return self.clock.now_ms() // 1000

    def login(self, name: str, password: str) -> dict:
        if self.r.exists(keys.gw_lockout(name)):
            raise ApiError(423, "ACCOUNT_LOCKED", f"too many failed logins for {name!r}: try again later")
        doc = _user(self.store, name)
        ok = False
        if doc is not None and doc.get("kind") == "human":
            try:
                ok = _hasher.verify(doc["pw_hash"], password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                ok = False
        if not ok:
            fails = self.r.incr(keys.gw_login_fails(name))
            self.r.expire(keys.gw_login_fails(name), self.cfg.lockout_window_s)
            if fails >= self.cfg.lockout_after:
                self.r.set(keys.gw_lockout(name), "1", ex=self.cfg.lockout_s)
                self.r.delete(keys.gw_login_fails(name))
            raise ApiError(401, "INVALID_CREDENTIALS", "unknown user or wrong password")
        self.r.delete(keys.gw_login_fails(name))
        return self._issue(doc["name"], doc["role"], family=uuid.uuid4().hex) | {
            "must_change": bool(doc.get("must_change"))}

    def change_password(self, p: Principal, old: str, new: str) -> None:
        doc = _user(self.store, p.name)
        if doc is None or doc.get("kind") != "human":
            raise ApiError(422, "RULE_VIOLATED", "only people have passwords (service tokens are reissued)",
                           field="old_password")
        try:
            _hasher.verify(doc["pw_hash"], old)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise ApiError(422, "RULE_VIOLATED", "old_password is wrong", field="old_password") from None
        if len(new) < 8 or new == old:
            raise ApiError(422, "RULE_VIOLATED", "new_password needs 8+ characters and must differ",
                           field="new_password")
        self.store.update_if(USERS, p.name, {"pw_hash": _hasher.hash(new), "must_change": False}, {"name": p.name})

    def _issue(self, name: str, role: str, family: str) -> dict:
        now = self.now_s()
        jti = uuid.uuid4().hex
        access = jwt.encode({"sub": name, "role": role, "jti": jti, "iat": now, "exp": now + self.cfg.access_ttl_s,
                             "fam": family}, self.cfg.jwt_secret, algorithm=ALGORITHM)
        refresh = secrets.token_urlsafe(32)
        self.r.set(keys.gw_refresh(_sha(refresh)), json.dumps({"sub": name, "fam": family}), ex=self.cfg.refresh_ttl_s)
        return {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                "expires_in": self.cfg.access_ttl_s, "role": role}

    def refresh(self, token: str) -> dict:
        h = _sha(token)
        raw = self.r.getdel(keys.gw_refresh(h))
        if raw is None:
            family = _s(self.r.get(keys.gw_refresh_used(h)))
            if family:  # a rotated token shown again: someone kept a copy; end the whole family
                self.r.set(keys.gw_family_revoked(family), "1", ex=self.cfg.refresh_ttl_s)
            raise ApiError(401, "INVALID_REFRESH_TOKEN", "refresh token unknown, expired or already used")
        data = json.loads(raw)
        self.r.set(keys.gw_refresh_used(h), data["fam"], ex=self.cfg.refresh_ttl_s)
        if self.r.exists(keys.gw_family_revoked(data["fam"])):
            raise ApiError(401, "INVALID_REFRESH_TOKEN", "refresh token family revoked")
        doc = _user(self.store, data["sub"])
        if doc is None:
            raise ApiError(401, "INVALID_REFRESH_TOKEN", "user disabled or removed")
        return self._issue(doc["name"], doc["role"], family=data["fam"])

    def revoke(self, p: Principal, family: str = "") -> None:
        ttl = max(1, p.exp - self.now_s())
        self.r.set(keys.gw_revoked_jti(p.jti), "1", ex=ttl)
        if family:
            self.r.set(keys.gw_family_revoked(family), "1", ex=self.cfg.refresh_ttl_s)

    def decode(self, token: str) -> tuple[Principal, dict]:
        try:
            claims = jwt.decode(token, self.cfg.jwt_secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "sub", "jti"], "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise ApiError(401, "INVALID_TOKEN", f"access token rejected: {exc}") from None
        # Expiry against the gateway's clock (ctx.clock), not the wall clock PyJWT would use.
        if int(claims["exp"]) <= self.now_s():
            raise ApiError(401, "TOKEN_EXPIRED", "access token expired: POST /v1/auth/refresh")
        if self.r.exists(keys.gw_revoked_jti(claims["jti"])) or (
                claims.get("fam") and self.r.exists(keys.gw_family_revoked(claims["fam"]))):
            raise ApiError(401, "TOKEN_REVOKED", "access token revoked: log in again")
        doc = _user(self.store, claims["sub"])
        if doc is None:
            raise ApiError(401, "INVALID_TOKEN", "user disabled or removed")
        return Principal(doc["name"], doc["role"], "human", claims["jti"], int(claims["exp"])), claims

    def service(self, token: str) -> Principal:
        name, _, secret = token[len("svc_"):].partition(".")
        doc = _user(self.store, name)
        if doc is None or doc.get("kind") != "service" or not hmac.compare_digest(
                doc.get("token_sha256", ""), _sha(secret)):
            raise ApiError(401, "INVALID_TOKEN", "service token rejected")
        return Principal(doc["name"], doc["role"], "service")

    def authenticate(self, bearer: str | None, cookie: str | None) -> Principal:
        if bearer:
            if bearer.startswith("svc_"):
                return self.service(bearer)
            return self.decode(bearer)[0]
        if cookie:
            p, _ = self.decode(cookie)
            return Principal(p.name, p.role, p.kind, p.jti, p.exp, via_cookie=True)
        raise ApiError(401, "UNAUTHENTICATED", "send Authorization: Bearer <token> (POST /v1/auth/login)")

    def csrf_token(self, p: Principal) -> str:
        """Bound to the session's jti: a form from another site cannot know it."""
        return hmac.new(self.cfg.jwt_secret.encode(), f"csrf:{p.jti}".encode(), hashlib.sha256).hexdigest()

    def check_rate(self, p: Principal) -> None:
        window = self.now_s() // 60
        key = keys.gw_rate(p.name, window)
        n = self.r.incr(key)
        if n == 1:
            self.r.expire(key, 120)
        if n > self.cfg.rate_per_min:
            raise ApiError(429, "RATE_LIMITED", f"more than {self.cfg.rate_per_min} requests a minute for "
                           f"{p.name!r}: retry in {60 - self.now_s() % 60} s")
