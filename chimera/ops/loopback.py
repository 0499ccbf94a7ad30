"""Free loopback ports for servers a process starts itself (tests, `chimera up`, the drill).

Why not `bind(("127.0.0.1", 0))`: the kernel answers from the *ephemeral* range, the same range it
draws the local port of every outgoing connection from. Between learning the port and the server
binding it, any client socket on the machine (a Redis connection, an SDK's HTTP pool) may take it,
and the server fails with EADDRINUSE (CI run of stop 21: the local venue's port was taken). So ports
come from below the ephemeral range, where the kernel never hands out client ports.

Several processes pick at once (pytest-xdist workers, each starting venues and redis-servers):
`CHIMERA_PORT_SLICE="k/n"` gives process k every n-th port, so two workers never race for one port.
Within a process a cursor walks the slice, so a port just handed out is not handed out again before
its server binds.
"""

from __future__ import annotations

import os
import random
import socket
import threading

# 10000: above well-known and registered services people run on a dev machine (5432, 6379, 8080 ...).
_LOW = 10_000
_lock = threading.Lock()
_cursor: list[int] = []


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _slice() -> tuple[int, int]:
    raw = os.environ.get("CHIMERA_PORT_SLICE", "")
    try:
        k, n = (int(x) for x in raw.split("/"))
        if 0 <= k < n:
            return k, n
    except ValueError:
        pass
    return 0, 1


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(bus_offset: int = 0) -> int:
    """A loopback port no one listens on, outside the ephemeral range; with `bus_offset` (a Redis
    Cluster node's bus is port+10000) that port must be free and outside the range too."""
    high = _ephemeral_low() - bus_offset
    if high - _LOW < 1000:
        raise RuntimeError(f"no port range below the ephemeral ports ({_ephemeral_low()}) for offset {bus_offset}")
    k, n = _slice()
    span = (high - _LOW) // n
    with _lock:
        if not _cursor:
            _cursor.append(random.randrange(span))
        for _ in range(span):
            _cursor[0] = (_cursor[0] + 1) % span
            port = _LOW + _cursor[0] * n + k
            if _is_free(port) and (not bus_offset or _is_free(port + bus_offset)):
                return port
    raise RuntimeError(f"no free loopback port in {_LOW}..{high} (slice {k}/{n})")
