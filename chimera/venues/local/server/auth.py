"""Request parameters, HMAC signatures, timestamps and Binance-style rate-limit accounting."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl

from aiohttp import web

from ..engine.model import VenueError


class Params:
    """Typed access to request params with Binance's error codes for bad values."""

    def __init__(self, items: dict[str, str]):
        self.items = items

    def str(self, name: str, required: bool = False) -> str | None:
        value = self.items.get(name)
        if value is None or value == "":
            if required:
                raise VenueError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
            return None
        return value

    def dec(self, name: str, required: bool = False) -> Decimal | None:
        raw = self.str(name, required)
        if raw is None:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise VenueError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                    "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.") from None
        if not value.is_finite():
            raise VenueError(-1100, f"Illegal characters found in parameter '{name}'.")
        return value

    def int(self, name: str, required: bool = False, default: int | None = None) -> int | None:
        raw = self.str(name, required)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise VenueError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                    "'^[0-9]{1,20}$'.") from None

    def bool(self, name: str) -> bool:
        raw = self.str(name)
        if raw is None:
            return False
        if raw.lower() not in ("true", "false"):
            raise VenueError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return raw.lower() == "true"


async def read_params(request: web.Request) -> tuple[Params, str]:
    """All params (query + form body) and the exact string Binance signs: query then body."""
    raw_qs = request.rel_url.raw_query_string
    body = ""
    if request.can_read_body:
        body = (await request.read()).decode("utf-8", "replace")
    items = dict(parse_qsl(raw_qs, keep_blank_values=True))
    if body:
        items.update(dict(parse_qsl(body, keep_blank_values=True)))
    return Params(items), raw_qs + body


def _strip_signature(total: str) -> str:
    parts = [p for p in total.split("&") if not p.startswith("signature=")]
    return "&".join(parts)


def check_signed(engine, request: web.Request, params: Params, total: str, recv_clock_ms: int) -> str:
    """Returns the account name or raises the Binance error a real server would send."""
    account = check_api_key(engine, request)
    secret = engine.accounts[account].api_secret
    signature = params.str("signature")
    if params.str("timestamp") is None:
        raise VenueError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
    if signature is None:
        raise VenueError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    payload = _strip_signature(total)
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise VenueError(-1022, "Signature for this request is not valid.")
    ts = params.int("timestamp")
    recv = params.int("recvWindow", default=5000)
    if recv is None or recv <= 0 or recv > 60000:
        raise VenueError(-1131, "recvWindow must be less than 60000")
    if ts >= recv_clock_ms + 1000 or recv_clock_ms - ts > recv:
        raise VenueError(-1021, "Timestamp for this request is outside of the recvWindow.")
    return account


def check_api_key(engine, request: web.Request) -> str:
    key = request.headers.get("X-MBX-APIKEY", "")
    if not key or not key.isalnum():
        raise VenueError(-2014, "API-key format invalid.", http_status=401)
    account = engine.by_key.get(key)
    if account is None:
        raise VenueError(-2015, "Invalid API-key, IP, or permissions for action.", http_status=401)
    return account


class RateLimiter:
    """Sliding windows on the wall clock: request weight per IP per minute, orders per account."""

    def __init__(self, weight_per_minute: int = 2400, orders_per_10s: int = 300, orders_per_minute: int = 1200):
        self.weight_limit = weight_per_minute
        self.orders_10s = orders_per_10s
        self.orders_1m = orders_per_minute
        self.weights: dict[str, deque] = {}
        self.orders: dict[str, deque] = {}

    @staticmethod
    def _window(q: deque, now: float, span: float) -> None:
        while q and q[0][0] <= now - span:
            q.popleft()

    def add_weight(self, ip: str, weight: int) -> tuple[int, bool]:
        now = time.monotonic()
        q = self.weights.setdefault(ip, deque())
        self._window(q, now, 60)
        used = sum(w for _, w in q) + weight
        q.append((now, weight))
        return used, used > self.weight_limit

    def add_order(self, account: str) -> tuple[int, int, bool]:
        now = time.monotonic()
        q = self.orders.setdefault(account, deque())
        self._window(q, now, 60)
        q.append((now, 1))
        in_10s = sum(1 for t, _ in q if t > now - 10)
        in_1m = len(q)
        return in_10s, in_1m, in_10s > self.orders_10s or in_1m > self.orders_1m
