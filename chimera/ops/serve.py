"""Each worker process serves its own Prometheus metrics and health (ARCHITECTURE §9).

``/metrics``  the process's prometheus_client registry (``chimera_*`` names, base units);
``/health``   liveness: the process answers and its loop has not stopped (200, else 503);
``/ready``    readiness: every dependency answers (Redis PING, a store read), 200 or 503 naming
              the one that failed.

One server thread per process on ``CHIMERA_METRICS_HOST:CHIMERA_METRICS_PORT`` (0 picks a free
port; the address is logged and ``chimera up`` prints it). Requests are served one at a time on
that thread, so the store's per-thread connection is opened once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chimera.store import collections

Check = Callable[[], object]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/health":
            alive = self.server.alive()
            self._json(200 if alive else 503, {"status": "ok" if alive else "stopped", **self.server.info})
        elif path == "/ready":
            failed = {}
            for name, check in self.server.checks.items():
                try:
                    check()
                except Exception as exc:  # the point of the probe: report, never raise
                    failed[name] = f"{type(exc).__name__}: {exc}"[:300]
            body = {name: failed.get(name, "ok") for name in self.server.checks}
            self._json(503 if failed else 200, {"ready": not failed, **body, **self.server.info})
        else:
            self._json(404, {"error": f"no route {path}; try /metrics, /health or /ready"})

    def _json(self, code: int, body: dict) -> None:
        self._send(code, json.dumps(body).encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args) -> None:  # scrapes every few seconds: not worth a log line each
        pass


class _Server(HTTPServer):
    registry = REGISTRY
    checks: dict[str, Check]
    info: dict
    alive: Callable[[], bool]


class HealthServer:
    def __init__(self, host: str, port: int, *, checks: dict[str, Check], info: dict,
                 alive: Callable[[], bool] = lambda: True) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.checks = checks
        self._server.info = info
        self._server.alive = alive
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("serving /metrics, /health and /ready on {}", self.address)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_worker(settings, *, role: str, consumer: str, r, store=None, alive: Callable[[], bool] = lambda: True):
    """Start the process's metrics/health server if the settings ask for one (None: they do not)."""
    if settings.metrics_port is None:
        return None
    checks: dict[str, Check] = {"redis": r.ping}
    if store is not None:
        checks["store"] = lambda: store.get(collections.CONFIG_ACTIVE, "active")
    return HealthServer(settings.metrics_host, settings.metrics_port, checks=checks,
                        info={"role": role, "consumer": consumer}, alive=alive).start()
