"""Which backends the contract suites run against, and why one is skipped."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docker_available() -> bool:
    sock = "/var/run/docker.sock"
    if not os.path.exists(sock):
        return False
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(0.3)
    try:
        s.connect(sock)
        return True
    except OSError:
        return False
    finally:
        s.close()


def arango_url_or_skip_reason() -> tuple[str | None, str]:
    url = os.environ.get("CHIMERA_TEST_ARANGO_URL")
    if url:
        u = urlparse(url)
        if port_open(u.hostname or "127.0.0.1", u.port or 8529):
            return url, ""
        return None, f"CHIMERA_TEST_ARANGO_URL={url} is set but nothing answers on that port"
    if docker_available():
        return "docker", ""
    if port_open("127.0.0.1", 8529):
        return "arangodb://root:@127.0.0.1:8529/chimera_test", ""
    return None, ("ArangoDB suite skipped: CHIMERA_TEST_ARANGO_URL is not set, no Docker engine, and nothing "
                  "listens on 127.0.0.1:8529 (probed in < 1 s)")
