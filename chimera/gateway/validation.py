"""Strict JSON bodies and an OpenAPI document that says so.

Litestar converts request data leniently (``strict=False``: ``0`` passes as ``false``, ``"20"`` as
``20``), which suits query strings but not bodies: a body is decoded again here, strictly, against
the handler's ``data`` type before the handler runs, and a mismatch is a 400 naming the field.
``document_strict_bodies`` marks every ``forbid_unknown_fields`` struct ``additionalProperties:
false`` in the OpenAPI document, so the contract and the server agree.
"""

from __future__ import annotations

import re

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from chimera.gateway.errors import ApiError
from chimera.gateway.rbac import UNSAFE


async def strict_body(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    if connection.scope.get("method") not in UNSAFE or handler.opt.get("form"):
        return  # UI forms are url-encoded and checked field by field in their handler
    field = getattr(handler, "parsed_fn_signature", None)
    field = field.parameters.get("data") if field is not None else None
    if field is None:
        return
    body = await connection.body()  # cached in the scope: the handler's own parsing reads it again
    if not body.strip():
        if field.is_optional:
            return
        raise ApiError(400, "INVALID_REQUEST", "a JSON body is required", field="body")
    try:
        raw = msgspec.json.decode(body)
        msgspec.convert(_integral(raw), type=field.annotation, strict=True)
    except msgspec.ValidationError as exc:
        m = re.search(r"`\$\.([A-Za-z0-9_]+)", str(exc)) or re.search(r"field `([A-Za-z0-9_]+)`", str(exc))
        raise ApiError(400, "INVALID_REQUEST", str(exc), field=m.group(1) if m else "body") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "INVALID_REQUEST", f"body is not JSON: {exc}", field="body") from None


def _integral(value):
    """JSON Schema counts 1008.0 as an integer; so do we (money is never a JSON number here)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def fix_options_allow(app) -> None:
    """Litestar's automatic OPTIONS answer is bound to the route as first registered; when GET and
    POST of one path are separate handlers it lists only one of them. Rebind it to the final route."""
    from litestar import Response

    for route in app.routes:
        for h in getattr(route, "route_handlers", []):
            if h.http_methods == {"OPTIONS"} and h.handler_name == "options_handler":
                allow = ", ".join(sorted(route.methods))

                def options_handler(scope, _allow=allow) -> Response:
                    return Response(content=None, status_code=204, headers={"Allow": _allow}, media_type="text/plain")

                h._fn = options_handler


def forbidding_structs(handlers) -> set[str]:
    names = set()
    for h in handlers:
        sig = getattr(h, "parsed_fn_signature", None)
        data = sig.parameters.get("data") if sig is not None else None
        if data is None:
            continue
        for t in (data.annotation, *getattr(data, "args", ())):
            cfg = getattr(t, "__struct_config__", None)
            if cfg is not None and cfg.forbid_unknown_fields:
                names.add(t.__name__)
    return names


def document_strict_bodies(app) -> None:
    handlers = [h for route in app.routes for h in getattr(route, "route_handlers", [])]
    strict = forbidding_structs(handlers)
    schemas = app.openapi_schema.components.schemas or {}
    for name, schema in schemas.items():
        if name.split("_")[-1] in strict or name in strict:
            schema.additional_properties = False
