"""A one-hop worker for the latency benchmark: bench:hop:in -> bench:hop:out."""

from __future__ import annotations

from chimera.ops.bootstrap import redis_from, stores_from
from chimera.ops.settings import load_settings
from chimera.streams.producer import Emit
from chimera.workers.clock import WallClock
from chimera.workers.handler import HandlerSpec
from chimera.workers.runtime import Worker


def _forward(env, ctx):
    return [Emit("bench:hop:out", env.payload, env.idempotency_key + ":out")]


SPEC = HandlerSpec(role="bench-hop", handle=_forward, streams=lambda s: ["bench:hop:in"])

if __name__ == "__main__":
    settings = load_settings()
    store, objects = stores_from(settings)
    w = Worker(SPEC, redis_from(settings), settings=settings, store=store, clock=WallClock(), consumer="hop")
    w.install_signal_handlers()
    w.run()
