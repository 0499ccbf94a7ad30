"""Channels the notifier sends to, and one HTTP send each (stdlib ``urllib``: no client state to
leak between sends, a hard timeout).

Configuration: the active bundle's ``notifier`` section; secrets are named by environment variable,
never stored in a document::

    {"notifier": {
       "channels": {
         "ops-hook": {"type": "webhook", "url": "https://hooks.example/chimera", "secret_env": "CHIMERA_HOOK_SECRET"},
         "desk":     {"type": "telegram", "chat_id": "-1001234", "token_env": "CHIMERA_TELEGRAM_TOKEN",
                      "base_url": "https://api.telegram.org"}},
       "routes": {"ERROR": ["ops-hook", "desk"], "FATAL": ["ops-hook", "desk"]},
       "retry": {"max_attempts": 8, "base_ms": 1000, "max_ms": 300000, "timeout_s": 5}}}

Webhooks follow Standard Webhooks: ``webhook-id`` (the same on every retry of one message, so the
receiver de-duplicates), ``webhook-timestamp`` (epoch seconds) and ``webhook-signature``
``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`` where the key is the base64 part of
a ``whsec_...`` secret. ``webhook-attempt`` tells the receiver which attempt this is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from chimera.errors import PermanentError


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str  # webhook | telegram
    url: str = ""
    secret_env: str = ""
    chat_id: str = ""
    token_env: str = ""
    base_url: str = "https://api.telegram.org"


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 8
    base_ms: int = 1000
    max_ms: int = 300_000
    timeout_s: float = 5.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    retry_after_s: float | None = None  # the receiver's own wait (429), honoured over our backoff
    permanent: bool = False  # a 4xx that no retry can fix


def parse_channel(name: str, raw: dict) -> Channel:
    kind = str(raw.get("type", "")).lower()
    if kind == "webhook":
        if not raw.get("url"):
            raise PermanentError(f"notifier.channels.{name}.url: required for a webhook")
        return Channel(name, kind, url=str(raw["url"]), secret_env=str(raw.get("secret_env", "")))
    if kind == "telegram":
        if not raw.get("chat_id") or not raw.get("token_env"):
            raise PermanentError(f"notifier.channels.{name}: a telegram channel needs chat_id and token_env")
        return Channel(name, kind, chat_id=str(raw["chat_id"]), token_env=str(raw["token_env"]),
                       base_url=str(raw.get("base_url", Channel.base_url)).rstrip("/"))
    raise PermanentError(f"notifier.channels.{name}.type={kind!r}: expected webhook or telegram")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _secret(env_name: str, what: str) -> str:
    value = os.environ.get(env_name, "") if env_name else ""
    if not value:
        raise PermanentError(f"{what}: environment variable {env_name or '(none configured)'} is not set")
    return value


def _retry_after(headers, body: bytes) -> float | None:
    try:
        doc = json.loads(body or b"{}")
        got = (doc.get("parameters") or {}).get("retry_after") if isinstance(doc, dict) else None
        if got is not None:
            return float(got)
    except ValueError:
        pass
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Outcome:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **headers},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            payload = resp.read()
            if url.rsplit("/", 1)[-1] == "sendMessage" and not json.loads(payload or b"{}").get("ok", False):
                return Outcome(False, f"telegram answered ok=false: {payload[:200]!r}")
            return Outcome(True, f"http {resp.status}")
    except urllib.error.HTTPError as exc:
        payload = exc.read() or b""
        if exc.code == 429:
            return Outcome(False, "http 429", retry_after_s=_retry_after(exc.headers, payload))
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 409, 425)
        return Outcome(False, f"http {exc.code}: {payload[:200]!r}", permanent=permanent)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        return Outcome(False, f"no answer: {exc}")


def send(ch: Channel, *, msg_id: str, attempt: int, now_s: int, body: dict, text: str, timeout_s: float) -> Outcome:
    if ch.kind == "webhook":
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(now_s), "webhook-attempt": str(attempt)}
        if ch.secret_env:
            headers["webhook-signature"] = sign(_secret(ch.secret_env, f"channel {ch.name}"), msg_id, now_s, raw)
        return _post(ch.url, raw, headers, timeout_s)
    token = _secret(ch.token_env, f"channel {ch.name}")
    raw = json.dumps({"chat_id": ch.chat_id, "text": text}).encode()
    return _post(f"{ch.base_url}/bot{token}/sendMessage", raw, {}, timeout_s)
