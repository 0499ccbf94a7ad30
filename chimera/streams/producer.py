"""The producer: wrap a payload in the envelope and XADD it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgspec

from chimera.schemas.envelope import Envelope, Message, encode, type_of
from chimera.streams.redis import execute_replicated, retry_redis

DEFAULT_MAXLEN = 1_000_000  # approximate trim keeps memory bounded; replay horizon per stream


@dataclass(frozen=True)
class Emit:
    """What a handler returns: publish ``payload`` onto ``stream``.

    With ``due_ms`` it is a **timer** (ARCHITECTURE §4): the runtime publishes it when its clock
    reaches ``due_ms`` (the Redis runtime writes the due-queue in the same flush pipeline as the
    ack; the in-process runtime keeps a heap on its ManualClock). ``timer_key`` names the timer so a
    later ``Emit`` with the same key replaces it (a maker window pushed back) and ``CancelTimer``
    removes it; without one the idempotency key names it.
    """

    stream: str
    payload: Message
    idempotency_key: str
    account_id: str | None = None
    event_time: int | None = None
    due_ms: int | None = None
    timer_key: str | None = None

    @property
    def is_timer(self) -> bool:
        return self.due_ms is not None

    @property
    def timer_name(self) -> str:
        return self.timer_key or f"{self.stream}|{self.idempotency_key}"


@dataclass(frozen=True)
class CancelTimer:
    """What a handler returns to disarm a timer it armed earlier (by ``Emit.timer_key``)."""

    timer_key: str


def envelope_for(emit: Emit, *, parent: Envelope | None, now_ms: int, config_rev: int = 0) -> Envelope:
    type_, version = type_of(emit.payload)
    return Envelope(
        type=type_,
        version=version,
        idempotency_key=emit.idempotency_key,
        correlation_id=(parent.correlation_id or parent.idempotency_key) if parent else emit.idempotency_key,
        causation_id=parent.idempotency_key if parent else "",
        # A timer happens at its due time: that is its event time unless the handler says otherwise.
        event_time=emit.event_time if emit.event_time is not None else (
            emit.due_ms if emit.due_ms is not None else now_ms),
        account_id=emit.account_id or (parent.account_id if parent else "main"),
        config_rev=config_rev,
        payload=emit.payload,
    )


class Producer:
    def __init__(self, r, clock, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.r = r
        self.clock = clock
        self.maxlen = maxlen

    @retry_redis
    def publish(self, stream: str, payload: Message, idempotency_key: str | None = None,
                account_id: str = "main", event_time: int | None = None, correlation_id: str = "") -> str:
        key = idempotency_key or uuid.uuid4().hex
        env = envelope_for(Emit(stream, payload, key, account_id, event_time), parent=None, now_ms=self.clock.now_ms())
        if correlation_id:
            env = msgspec.structs.replace(env, correlation_id=correlation_id)
        # The caller answers "accepted" once this returns: only when a replica holds the entry (where the
        # node has one, streams/redis.py "replication") does a failover not take it back.
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(stream, encode(env), maxlen=self.maxlen, approximate=True)
        [entry_id] = execute_replicated(self.r, pipe, [stream])
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
