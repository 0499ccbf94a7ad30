"""Gateway error shape: ``{"error": CODE, "detail": ..., "field"?: ...}`` with the HTTP status."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from loguru import logger
from redis.exceptions import RedisError

from chimera.streams.redis import is_transient


class ErrorBody(msgspec.Struct):
    """Every 4xx/5xx body the gateway answers (documented on every route in OpenAPI)."""

    error: str
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None


ERROR_TEXT = {400: "Invalid request (the offending `field` is named)", 401: "Not signed in, token expired or revoked",
              403: "Role not allowed, CSRF token missing or four-eyes violated", 404: "Unknown id",
              409: "State conflict (e.g. approval already decided)",
              422: "Valid against the schema but refused by a business rule (the `field` is named)", 423: "User locked after failed logins",
              429: "Rate limit exceeded", 501: "The service behind this route is not built yet",
              503: "Not ready, or Redis unavailable (`REDIS_UNAVAILABLE`: retry after `Retry-After` seconds)"}
REDIS_RETRY_AFTER_S = 5


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    return {c: ResponseSpec(data_container=ErrorBody, description=ERROR_TEXT[c]) for c in codes}


class ApiError(HTTPException):
    """A business error with a stable machine-readable code (e.g. ACCOUNT_ID_REQUIRED_FOR_CANCEL)."""

    def __init__(self, status_code: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.code = code
        self.field = field


def api_error_handler(_: Request, exc: ApiError) -> Response:
    body = {"error": exc.code, "detail": exc.detail}
    if exc.field:
        body["field"] = exc.field
    return Response(body, status_code=exc.status_code)


def http_error_handler(_: Request, exc: HTTPException) -> Response:
    """Litestar's own 404/405/500... in the same shape as ours."""
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}.get(exc.status_code,
                                                                                   f"HTTP_{exc.status_code}")
    # Keep Litestar's headers: a 405 must say what is Allowed (RFC 9110).
    return Response({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def redis_error_handler(_: Request, exc: RedisError) -> Response:
    """A Redis error that reached a route (past the retry policy where one applies) is the bus being
    unavailable, not the request being wrong: 503 with Retry-After when it is transient (down, failing
    over, out of memory), 500 otherwise; both in the gateway's error shape, never Litestar's bare 500."""
    if is_transient(exc):
        logger.warning("redis unavailable to the gateway: {!r}", exc)
        return Response({"error": "REDIS_UNAVAILABLE", "detail": f"Redis is unavailable ({type(exc).__name__}); "
                         f"retry in {REDIS_RETRY_AFTER_S} s"}, status_code=503,
                        headers={"Retry-After": str(REDIS_RETRY_AFTER_S)})
    logger.opt(exception=exc).error("redis error in the gateway")
    return Response({"error": "INTERNAL", "detail": f"Redis refused the request ({type(exc).__name__})"}, status_code=500)


def validation_handler(_: Request, exc: ValidationException) -> Response:
    """400 naming the offending field(s): Litestar/msgspec report ``... - at `$.qty```."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    fields = []
    for item in extra:
        msg = str(item.get("message", "")) if isinstance(item, dict) else str(item)
        m = re.search(r"`\$\.([A-Za-z0-9_.]+)`", msg) or re.search(r"field `([A-Za-z0-9_]+)`", msg)
        if m:
            fields.append(m.group(1))
        elif isinstance(item, dict) and item.get("key"):
            fields.append(str(item["key"]))
    body = {"error": "INVALID_REQUEST", "detail": exc.detail, "errors": extra}
    if fields:
        body["field"] = fields[0]
    return Response(body, status_code=400)


def not_found(what: str, key: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} {key!r} is unknown")


def found(doc, what: str, key: str):
    """The stored document a GET answers, or 404 naming what is unknown."""
    if doc is None:
        raise not_found(what, key)
    return doc
