"""Benchmark and test handlers: no work, or one SQLite document per entry."""

from __future__ import annotations

from chimera.schemas.envelope import to_builtins

BENCH_STREAM = "bench:{noop}"


def handle_noop(env, ctx):
    return ()


def handle_store(env, ctx):
    ctx.store.upsert("bench_docs", env.idempotency_key, {"payload": to_builtins(env.payload), "rev": ctx.config.rev})
    return ()


def _streams(_settings):
    return [BENCH_STREAM]


def _spec(role, fn):
    from chimera.workers.handler import HandlerSpec

    return HandlerSpec(role=role, handle=fn, streams=_streams, idempotency=None, description="benchmark")


SPEC = _spec("noop", handle_noop)
STORE_SPEC = _spec("sqlite-bench", handle_store)
