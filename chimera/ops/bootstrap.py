"""Wire a process together from Settings: Redis, stores, clock, consumer name."""

from __future__ import annotations

import os
import socket
import sys

from loguru import logger

from chimera.errors import FatalError
from chimera.ops.settings import Settings
from chimera.store import open_objects, open_store
from chimera.streams.redis import connect
from chimera.workers.clock import WallClock


def setup_logging(level: str = "INFO", json: bool | None = None) -> None:
    logger.remove()
    json = os.environ.get("CHIMERA_LOG_JSON", "1" if not sys.stderr.isatty() else "0") == "1" if json is None else json
    logger.add(sys.stderr, level=level.upper(), serialize=json, enqueue=False, backtrace=False)


def consumer_name(role: str, settings: Settings, index: int = 0) -> str:
    # Stable across restarts, so a restarted worker re-reads its own pending entries first.
    base = settings.consumer or f"{role}-{socket.gethostname()}"
    return f"{base}-{index}"


def redis_from(settings: Settings):
    r = connect(settings.redis_url, settings.redis_cluster)
    try:
        r.ping()
    except Exception as exc:
        raise FatalError(
            f"cannot reach Redis at {settings.redis_url}: {exc}. Start one (redis-server) or set CHIMERA_REDIS_URL."
        ) from None
    return r


def stores_from(settings: Settings):
    try:
        return open_store(settings.store_url), open_objects(settings.objects_url)
    except Exception as exc:
        raise FatalError(f"cannot open stores ({settings.store_url}, {settings.objects_url}): {exc}") from None


def clock_from(settings: Settings):
    from chimera.workers.clock import follow_redis, parse_clock_spec

    mode, key = parse_clock_spec(settings.clock)
    if mode == "wall":
        return WallClock()
    try:  # a paper replay of history: the venue's replay time (CHIMERA_CLOCK=follow[:key])
        return follow_redis(redis_from(settings), key)
    except LookupError as exc:
        raise FatalError(f"CHIMERA_CLOCK={settings.clock}: {exc}; start the venue with --pace-redis or "
                         "--clock-redis pointing at this Redis, or unset CHIMERA_CLOCK") from None
