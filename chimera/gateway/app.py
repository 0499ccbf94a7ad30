"""S12 gateway: the Litestar app (``create_app``) and the role entry point (``run``).

``run(settings, stop_event)`` serves the API with uvicorn on ``CHIMERA_API_HOST`` (default
127.0.0.1) : ``CHIMERA_API_PORT`` (default 8000) until ``stop_event`` is set. OpenAPI is at
``/schema``; the web UI at ``/ui`` (docs/ui.md). Every route is guarded by ``rbac.guard`` from one
permission table; state-changing requests are audited into the hash-chained ``audit_log``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from redis.exceptions import RedisError

from chimera.gateway.auth import Auth, AuthConfig, load_auth_config
from chimera.gateway.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    redis_error_handler,
    validation_handler,
)
from chimera.gateway.rbac import audit_middleware, guard
from chimera.gateway.routes import ROUTES
from chimera.gateway.v1 import V1_ROUTES
from chimera.gateway.v1_ops import OPS_ROUTES
from chimera.gateway.v1_research import RESEARCH_ROUTES
from chimera.gateway.validation import document_strict_bodies, fix_options_allow, strict_body
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock


@dataclass
class Deps:
    settings: Any
    r: Any
    store: Any
    clock: Any
    producer: Producer
    auth: Auth
    started_at: int = 0  # clock ms when this gateway process built its app (/v1/ops/health uptime)


def create_app(settings, r=None, store=None, clock=None, auth_config: AuthConfig | None = None) -> Litestar:
    from chimera.store import open_store
    from chimera.streams.redis import connect

    r = r if r is not None else connect(settings.redis_url, cluster=settings.redis_cluster)
    store = store if store is not None else open_store(settings.store_url)
    clock = clock or WallClock()
    from chimera.gateway import ui

    cfg = auth_config or load_auth_config()
    app = Litestar(
        route_handlers=[*ROUTES, *V1_ROUTES, *OPS_ROUTES, *RESEARCH_ROUTES, *ui.UI_ROUTES],
        guards=[guard, strict_body],
        middleware=[audit_middleware],
        exception_handlers={ApiError: ui.error_handler(api_error_handler), ValidationException: validation_handler,
                            HTTPException: http_error_handler, RedisError: redis_error_handler},
        openapi_config=OpenAPIConfig(
            title="Chimera gateway (S12)", version="1.0.0", path="/schema",
            components=Components(security_schemes={"bearer": SecurityScheme(
                type="http", scheme="bearer", bearer_format="JWT",
                description="POST /v1/auth/login → access_token; machines: service token svc_<name>.<secret>")}),
            security=[{"bearer": []}]),
        template_config=ui.template_config(),
        debug=False,
    )
    document_strict_bodies(app)
    fix_options_allow(app)
    app.state.chimera = Deps(settings, r, store, clock, Producer(r, clock), Auth(cfg, r, store, clock),
                             started_at=clock.now_ms())
    return app


def run(settings, stop_event: threading.Event) -> None:
    """Role s12: serve the API until ``stop_event`` is set."""
    import uvicorn

    host = os.environ.get("CHIMERA_API_HOST", "127.0.0.1")
    port = int(os.environ.get("CHIMERA_API_PORT", "8000"))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning",
                                           lifespan="on"))

    def watch() -> None:
        stop_event.wait()
        server.should_exit = True

    threading.Thread(target=watch, daemon=True, name="gateway-stop").start()
    server.run()
