"""Execution traces (trading-ci ``execution_traces``): START / DONE / ERROR per idempotency key.

Every entry a worker hands to its handler leaves a trace under the envelope's idempotency key:
``START`` (when the handler began: stream, entry id, message type, consumer) and then ``DONE`` (when
it returned, with the number of emits and timers) or ``ERROR`` (the reason, and whether the entry
stays pending for a retry or was dead-lettered). Duplicates skipped by the done-marker and entries
left pending on a busy lock are not handled, so they leave none; market-data entries (``mkt:*``)
succeed untraced (``UNTRACED``: their rate would cost gigabytes a day), their errors are traced.

Cheap by construction: the runtime collects a batch's traces in memory and ``write`` queues them on
the batch's flush pipeline (``flush.Commit``): one ``HSET`` (one field per entry) + one ``PEXPIRE``
per (group, clock hour) for the whole batch, no extra round trip. Traces live in Redis
(``keys.exec_trace``), one hash per group and hour, field ``<idempotency key>|DONE`` or ``|ERROR``
→ a JSON array with the START facts, expired as a whole after
``TRACE_TTL_MS`` (two days): they are an operator's recent history, not an archive. A crash before
the flush loses that batch's traces with its acks; the redelivered entries are traced again.

``query(r, key)`` reads them back for the ops API (``GET /v1/ops/traces/{key}``).
"""

from __future__ import annotations

import msgspec

from chimera.streams import keys
from chimera.streams.redis import retry_redis

HOUR_MS = 3_600_000
# Market data (S2, S6's mark watch) arrives at thousands of entries a second: a trace per book ticker
# would cost Redis gigabytes a day and tell an operator nothing an entry id does not. Not traced.
UNTRACED = ("mkt:",)
TRACE_TTL_MS = 2 * 24 * HOUR_MS
PHASES = ("START", "DONE", "ERROR")
_enc = msgspec.json.Encoder()


class Traces:
    """One worker's trace buffer (the pipeline adds, the flush writes).

    One hash field per handled entry: ``<key>|DONE`` or ``<key>|ERROR``, its value carrying the START
    facts too (start time, stream, entry id, type, consumer), so a batch costs one field per entry;
    ``query`` presents it as the START and the DONE/ERROR step.
    """

    def __init__(self, group: str, consumer: str, ttl_ms: int = TRACE_TTL_MS) -> None:
        self.group, self.consumer, self.ttl_ms = group, consumer, ttl_ms
        self.rows: dict[int, dict[str, bytes]] = {}  # hour -> {field: value}

    def done(self, env, stream: str, entry_id: str, started_ms: int, ended_ms: int, outputs: int) -> None:
        if stream.startswith(UNTRACED):
            return
        self.rows.setdefault(started_ms // HOUR_MS, {})[f"{env.idempotency_key}|DONE"] = _enc.encode(
            (started_ms, stream, entry_id, env.type, self.consumer, ended_ms, outputs))

    def error(self, env, stream: str, entry_id: str, started_ms: int, ended_ms: int, reason: str,
              outcome: str) -> None:
        key = getattr(env, "idempotency_key", "") or f"{stream}/{entry_id}"  # undecodable: no key of its own
        self.rows.setdefault(started_ms // HOUR_MS, {})[f"{key}|ERROR"] = _enc.encode(
            (started_ms, stream, entry_id, getattr(env, "type", ""), self.consumer, ended_ms, outcome, reason[:1000]))

    def forget(self) -> None:
        """Drop the buffered traces: the flush that wrote them went through."""
        self.rows = {}

    def write(self, pipe) -> None:
        """Queue the buffered traces on ``pipe`` (the batch's flush); the flush forgets them once written."""
        for hour, fields in self.rows.items():
            name = keys.exec_trace(self.group, hour)
            pipe.hset(name, mapping=fields)
            pipe.pexpire(name, self.ttl_ms)


def _steps(group: str, phase: str, raw: bytes) -> list[dict]:
    t0, stream, entry_id, type_, consumer, t1, *rest = msgspec.json.decode(raw)
    start = {"group": group, "phase": "START", "t": t0, "stream": stream, "entry_id": entry_id, "type": type_,
             "consumer": consumer}
    if phase == "DONE":
        return [start, {"group": group, "phase": "DONE", "t": t1, "ms": t1 - t0, "outputs": rest[0]}]
    return [start, {"group": group, "phase": "ERROR", "t": t1, "outcome": rest[0], "reason": rest[1]}]


def groups() -> list[str]:
    """Every built role's consumer group (where traces can be)."""
    from chimera.workers.registry import ROLES

    return [keys.group(r.code) for r in ROLES if r.spec_path]


@retry_redis
def query(r, key: str, *, now_ms: int, hours: int = 48, group_names: list[str] | None = None) -> list[dict]:
    """Every trace of idempotency key ``key`` in the last ``hours`` clock hours, oldest first.

    Each item: ``{"group", "phase", "t", ...}`` (START: stream, entry_id, type, consumer; DONE: ms,
    outputs; ERROR: outcome (retry | dead), reason). One pipelined ``HMGET`` per (group, hour).
    """
    if not key:
        raise ValueError("key: give the idempotency key to trace")
    names = group_names or groups()
    last = now_ms // HOUR_MS
    cells = [(g, h) for g in names for h in range(last - max(1, hours) + 1, last + 1)]
    pipe = r.pipeline(transaction=False)
    fields = [f"{key}|{p}" for p in ("DONE", "ERROR")]
    for g, h in cells:
        pipe.hmget(keys.exec_trace(g, h), fields)
    out = []
    for (g, _h), values in zip(cells, pipe.execute(), strict=True):
        for phase, raw in zip(("DONE", "ERROR"), values, strict=True):
            if raw is not None:
                out += _steps(g, phase, raw)
    # The latest attempt's START last: an ERROR (retried) then a DONE read START, ERROR, START, DONE.
    out.sort(key=lambda d: (d["t"], PHASES.index(d["phase"])))
    return out
