"""Gateway error shape: ``{"error": CODE, "detail": ..., "field"?: ...}`` with the HTTP status."""

from __future__ import annotations

import re

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException


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
