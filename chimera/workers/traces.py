"""Execution traces (trading-ci ``execution_traces``): START / DONE / ERROR per idempotency key.

Every entry a worker hands to its handler leaves a trace under the envelope's idempotency key:
``START`` (when the handler began: stream, entry id, message type, consumer) and then ``DONE`` (when
it returned, with the number of emits and timers) or ``ERROR`` (the reason, and whether the entry
stays pending for a retry or was dead-lettered). Duplicates skipped by the done-marker and entries
left pending on a busy lock are not handled, so they leave none.

Cheap by construction: the runtime collects a batch's traces in memory and ``write`` queues them on
the batch's flush pipeline (``flush.Commit``): one ``HSET`` + one ``PEXPIRE`` per (group, clock hour)
for the whole batch, no extra round trip. Traces live in Redis (``keys.exec_trace``), one hash per
group and hour, field ``<idempotency key>|<PHASE>`` → JSON, expired as a whole after
``TRACE_TTL_MS`` (two days): they are an operator's recent history, not an archive. A crash before
the flush loses that batch's traces with its acks; the redelivered entries are traced again.

``query(r, key)`` reads them back for the ops API (``GET /v1/ops/traces/{key}``).
"""

from __future__ import annotations

import msgspec

from chimera.streams import keys
from chimera.streams.redis import retry_redis

HOUR_MS = 3_600_000
TRACE_TTL_MS = 2 * 24 * HOUR_MS
PHASES = ("START", "DONE", "ERROR")
_enc = msgspec.json.Encoder()


class Traces:
    """One worker's trace buffer (the pipeline adds, the flush writes)."""

    def __init__(self, group: str, consumer: str, ttl_ms: int = TRACE_TTL_MS) -> None:
        self.group, self.consumer, self.ttl_ms = group, consumer, ttl_ms
        self.rows: list[tuple[int, str, bytes, str, bytes]] = []  # (hour, key|START, start, key|END, end)

    def done(self, env, stream: str, entry_id: str, started_ms: int, ended_ms: int, outputs: int) -> None:
        self._add(env.idempotency_key, env.type, stream, entry_id, started_ms,
                  "DONE", {"t": ended_ms, "ms": ended_ms - started_ms, "outputs": outputs})

    def error(self, env, stream: str, entry_id: str, started_ms: int, ended_ms: int, reason: str,
              outcome: str) -> None:
        key = getattr(env, "idempotency_key", "") or f"{stream}/{entry_id}"  # undecodable: no key of its own
        self._add(key, getattr(env, "type", ""), stream, entry_id, started_ms,
                  "ERROR", {"t": ended_ms, "outcome": outcome, "reason": reason[:1000]})

    def _add(self, key: str, type_: str, stream: str, entry_id: str, started_ms: int, phase: str, end: dict) -> None:
        start = _enc.encode({"t": started_ms, "stream": stream, "entry_id": entry_id, "type": type_,
                             "consumer": self.consumer})
        self.rows.append((started_ms // HOUR_MS, f"{key}|START", start, f"{key}|{phase}", _enc.encode(end)))

    def write(self, pipe) -> None:
        """Queue the buffered traces on ``pipe`` (the batch's flush) and forget them."""
        if not self.rows:
            return
        by_hour: dict[int, dict[str, bytes]] = {}
        for hour, k1, v1, k2, v2 in self.rows:
            fields = by_hour.setdefault(hour, {})
            fields[k1] = v1
            fields[k2] = v2
        for hour, fields in by_hour.items():
            name = keys.exec_trace(self.group, hour)
            pipe.hset(name, mapping=fields)
            pipe.pexpire(name, self.ttl_ms)
        self.rows = []


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
    fields = [f"{key}|{p}" for p in PHASES]
    for g, h in cells:
        pipe.hmget(keys.exec_trace(g, h), fields)
    out = []
    for (g, _h), values in zip(cells, pipe.execute(), strict=True):
        for phase, raw in zip(PHASES, values, strict=True):
            if raw is not None:
                out.append({"group": g, "phase": phase, **msgspec.json.decode(raw)})
    out.sort(key=lambda d: (d["t"], PHASES.index(d["phase"])))
    return out
