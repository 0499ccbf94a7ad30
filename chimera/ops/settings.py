"""Settings from the environment, validated once at start with a clear error."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

from chimera.errors import FatalError

VENUES = ("paper", "testnet", "live")


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    store_url: str = "sqlite:///var/chimera.sqlite"
    objects_url: str = "file://var/objects"
    venue: str = "paper"
    venue_url: str = "http://127.0.0.1:8765"
    accounts_file: str = ""
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    consumer: str = ""
    max_attempts: int = 5
    claim_idle_ms: int = 30_000
    block_ms: int = 1_000
    lock_ttl_ms: int = 10_000
    lease_ttl_ms: int = 5_000
    idem_ttl_s: int = 7 * 24 * 3600
    log_level: str = "INFO"
    # Each worker's /metrics, /health, /ready: None = not served (a Settings built in code, tests);
    # from the environment it is CHIMERA_METRICS_PORT, 0 (the default) = any free port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    # "wall", or "follow[:key]": time from the replaying local venue (workers/clock.py, CHIMERA_CLOCK).
    clock: str = "wall"
    exec_trace_ttl_s: int = 2 * 24 * 3600  # execution traces kept (workers/traces.py); 0: none recorded
    extra: dict = field(default_factory=dict)


def _int(env: dict, name: str, default: int, *, lo: int = 1, hi: int | None = None,
         rule: str = "must be positive", example: str = "") -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FatalError(f"{name}={raw!r} is not an integer; set it to e.g. {example or default}") from None
    if value < lo or (hi is not None and value > hi):
        raise FatalError(f"{name}={raw!r} {rule}")
    return value


def _clock(env: dict) -> str:
    from chimera.workers.clock import parse_clock_spec

    try:
        parse_clock_spec(env.get("CHIMERA_CLOCK", "wall"))
    except ValueError as exc:
        raise FatalError(str(exc)) from None
    return env.get("CHIMERA_CLOCK", "wall").strip() or "wall"


def load_settings(env: dict | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    redis_url = env.get("CHIMERA_REDIS_URL", Settings.redis_url)
    scheme = urlparse(redis_url).scheme
    if scheme not in ("redis", "rediss", "redis+cluster", "unix"):
        raise FatalError(
            f"CHIMERA_REDIS_URL={redis_url!r}: scheme must be redis://, rediss:// or redis+cluster:// "
            "(e.g. redis://127.0.0.1:6379/0)"
        )
    cluster = scheme == "redis+cluster" or env.get("CHIMERA_REDIS_CLUSTER", "") in ("1", "true", "yes")
    store_url = env.get("CHIMERA_STORE_URL", Settings.store_url)
    if urlparse(store_url).scheme not in ("sqlite", "arangodb", "arangodbs", "memory"):
        raise FatalError(
            f"CHIMERA_STORE_URL={store_url!r}: use sqlite:///path/file.sqlite, sqlite://:memory: "
            "or arangodb://user:pass@host:8529/dbname"
        )
    objects_url = env.get("CHIMERA_OBJECTS_URL", Settings.objects_url)
    if urlparse(objects_url).scheme not in ("file", "minio", "minios", "s3"):
        raise FatalError(
            f"CHIMERA_OBJECTS_URL={objects_url!r}: use file:///dir or minio://key:secret@host:9000/bucket"
        )
    venue = env.get("CHIMERA_VENUE", Settings.venue)
    if venue not in VENUES:
        raise FatalError(f"CHIMERA_VENUE={venue!r}: must be one of {', '.join(VENUES)}")
    symbols = tuple(s.strip().upper() for s in env.get("CHIMERA_SYMBOLS", ",".join(Settings.symbols)).split(",") if s.strip())
    if not symbols:
        raise FatalError("CHIMERA_SYMBOLS is empty; set e.g. CHIMERA_SYMBOLS=BTCUSDT,ETHUSDT")
    return Settings(
        redis_url=redis_url.replace("redis+cluster://", "redis://"),
        redis_cluster=cluster,
        store_url=store_url,
        objects_url=objects_url,
        venue=venue,
        venue_url=env.get("CHIMERA_VENUE_URL", Settings.venue_url),
        accounts_file=env.get("CHIMERA_ACCOUNTS_FILE", ""),
        symbols=symbols,
        consumer=env.get("CHIMERA_CONSUMER", ""),
        max_attempts=_int(env, "CHIMERA_MAX_ATTEMPTS", Settings.max_attempts),
        claim_idle_ms=_int(env, "CHIMERA_CLAIM_IDLE_MS", Settings.claim_idle_ms),
        block_ms=_int(env, "CHIMERA_BLOCK_MS", Settings.block_ms),
        lock_ttl_ms=_int(env, "CHIMERA_LOCK_TTL_MS", Settings.lock_ttl_ms),
        lease_ttl_ms=_int(env, "CHIMERA_LEASE_TTL_MS", Settings.lease_ttl_ms),
        log_level=env.get("CHIMERA_LOG_LEVEL", "INFO"),
        metrics_host=env.get("CHIMERA_METRICS_HOST", Settings.metrics_host),
        metrics_port=_int(env, "CHIMERA_METRICS_PORT", 0, lo=0, hi=65535, example="9400 (0: any free port)",
                          rule="must be between 0 (any free port) and 65535"),
        clock=_clock(env),
        exec_trace_ttl_s=_int(env, "CHIMERA_EXEC_TRACE_TTL_S", Settings.exec_trace_ttl_s, lo=0,
                              rule="must be >= 0 seconds (0: no execution traces)"),
        extra={"user_data": True} if env.get("CHIMERA_USER_DATA", "") in ("1", "true", "yes") else {},
    )
