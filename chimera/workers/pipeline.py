"""The per-entry pipeline both consumer loops run (ARCHITECTURE §2.3).

decode result (undecodable → dead letter + ack) → done already (its marker exists, or an earlier
entry of this batch carried the same key) → ack → TTL lock for the route's scope (busy → leave
pending) → crash-loop guard on a redelivery (``crashguard.py``) → handler, its log lines carrying
the entry's correlation and causation ids → stage emits, timers, marker and ack in the batch's
``Commit``.

Ack policy, explicitly:
* success: ack after the emits are written (a crash before the ack re-emits; consumers dedupe);
* ``RetryableError``, an unexpected exception, or a busy lock: no ack. The entry stays pending
  and comes back through XAUTOCLAIM after ``claim_idle_ms`` (on any replica) until it has failed
  ``max_attempts`` times (a busy lock is not a failure), then it is dead-lettered with the last reason;
* ``PermanentError`` (an unrouted message type too) or an undecodable entry: dead letter + ack at once;
* ``FatalError``: the worker stops (it cannot run at all).
"""

from __future__ import annotations

import traceback

import msgspec
from loguru import logger

from chimera.errors import FatalError, PermanentError, RetryableError
from chimera.schemas.envelope import Envelope, UnknownMessageType, decode, encode
from chimera.schemas.messages import DeadLetter
from chimera.streams import keys
from chimera.streams.producer import DEFAULT_MAXLEN, Emit, envelope_for
from chimera.streams.redis import retry_redis
from chimera.workers.crashguard import CrashGuard
from chimera.workers.flush import Commit
from chimera.workers.handler import HandlerSpec
from chimera.workers.locks import Lock
from chimera.workers.logctx import ENTRY
from chimera.workers.metrics import METRICS
from chimera.workers.traces import Traces

set_entry, reset_entry = ENTRY.set, ENTRY.reset


class Outcome:
    DONE, DUPLICATE, RETRY, DEAD = "done", "duplicate", "retry", "dead"


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


def field_dict(fields: dict | list | None) -> dict:
    """An entry's fields as a dict, whether redis-py parsed them or the raw reader kept them flat."""
    if isinstance(fields, list):
        return dict(zip(fields[::2], fields[1::2], strict=True))
    return fields or {}


def decode_entry(stream: str, entry_id: str, fields: dict | list) -> Envelope | Exception:
    try:
        if isinstance(fields, list):  # flat [k, v, ...] from the raw reader: only "e" is decoded
            fields = {b"e": fields[3]} if len(fields) == 4 and fields[2] == b"e" else field_dict(fields)
        return decode(fields, entry_id, stream)
    except (UnknownMessageType, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        return exc


@retry_redis
def dead_letter(r, *, stream: str, group: str, entry_id: str, fields: dict, reason: str,
                attempts: int, consumer: str, now_ms: int) -> None:
    letter = DeadLetter(
        stream=stream, group=group, entry_id=entry_id,
        fields={_s(k): (v if isinstance(v, bytes) else str(v).encode()) for k, v in field_dict(fields).items()},
        reason=reason[:4000], attempts=attempts, consumer=consumer, failed_at=now_ms,
    )
    env = envelope_for(Emit(keys.DEAD_LETTER, letter, f"{stream}/{group}/{entry_id}"), parent=None, now_ms=now_ms)
    r.xadd(keys.DEAD_LETTER, encode(env), maxlen=DEFAULT_MAXLEN, approximate=True)
    METRICS.dead_letters.labels(group=group).inc()


class EntryPipeline:
    """One entry at a time; what it decides is staged in ``commit`` and written per batch."""

    def __init__(self, spec: HandlerSpec, r, *, settings, group: str, consumer: str, commit: Commit,
                 crash_guard: CrashGuard, context) -> None:
        self.spec = spec
        self.r = r
        self.settings = settings
        self.group = group
        self.consumer = consumer
        self.commit = commit
        self.crash_guard = crash_guard
        self.context = context  # fence -> Context
        self.seen: set[str] = set()  # done-markers of this batch (prefetched, then added as entries finish)
        self.processed = 0
        # Execution traces (workers/traces.py), queued on the batch's flush; CHIMERA_EXEC_TRACE_TTL_S=0 turns them off.
        ttl_s = getattr(settings, "exec_trace_ttl_s", 2 * 24 * 3600)
        self.traces = commit.traces = Traces(group, consumer, ttl_s * 1000) if ttl_s else None
        self.current: tuple = (None, 0)  # (envelope, handler start ms) of the entry in hand, for its ERROR trace
        self._m_dup = METRICS.processed.labels(role=spec.role, outcome=Outcome.DUPLICATE)
        self._m_retry = METRICS.processed.labels(role=spec.role, outcome=Outcome.RETRY)

    # --- per batch ------------------------------------------------------------------------------

    def decode_batch(self, got: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict, Envelope | Exception]]:
        """Each entry with its envelope (or why it cannot be decoded); the batch's done-markers prefetched."""
        decoded = [(stream, entry_id, fields, decode_entry(stream, entry_id, fields)) for stream, entry_id, fields in got]
        self.seen = set()
        if self.spec.idempotency is not None:
            idems = [i for i in (self.spec.idempotency(env) for *_, env in decoded if isinstance(env, Envelope)) if i]
            if idems:  # one round trip for the whole batch instead of one EXISTS per entry
                self.seen = {idem for idem, hit in zip(idems, self._exists(idems), strict=True) if hit}
        return decoded

    @retry_redis  # a failover must not kill the worker (found by the chaos drill on the cluster)
    def _exists(self, idems: list[str]) -> list:
        pipe = self.r.pipeline(transaction=False)
        for idem in idems:
            pipe.exists(keys.idem_key(self.group, idem))
        return pipe.execute()

    # --- per entry ------------------------------------------------------------------------------

    def process(self, stream: str, entry_id: str, fields: dict, env: Envelope | Exception, attempts: int, *,
                redelivered: bool) -> str:
        if isinstance(env, Exception):
            self.current = (env, 0)
            return self.dead(stream, entry_id, fields, f"undecodable: {env}", attempts, redelivered=redelivered)
        spec = self.spec
        idem = spec.idempotency(env) if spec.idempotency is not None else None
        if idem and idem in self.seen:
            self.commit.ack(stream, entry_id, redelivered=redelivered)
            self._m_dup.inc()
            return Outcome.DUPLICATE
        lock = None
        scope = spec.lock(env) if spec.lock is not None else None
        if scope:
            lock = Lock(self.r, scope, self.settings.lock_ttl_ms, owner=f"{self.consumer}:{entry_id}")
            if not lock.acquire(wait_ms=200):
                return Outcome.RETRY  # busy: stays pending, comes back after claim_idle
        ctx = self.context(lock.fence if lock else 0)
        if (follow := getattr(ctx.clock, "follow_event", None)) is not None:  # a replay's EventClock
            follow(env.event_time)
        self.current = (env, started := ctx.clock.now_ms())
        ref = f"{stream}/{entry_id}" if redelivered else None  # crash-loop guard (crashguard.py)
        try:
            if ref and (crashes := self.crash_guard.take(ref, ctx.clock.now_ms())) >= self.settings.max_attempts:
                # Handler failures are counted separately (retry).
                return self.dead(stream, entry_id, fields, f"the worker died {crashes} times while "
                                 f"handling it ({attempts} deliveries)", attempts, redelivered=redelivered)
            token = set_entry((spec.role, env))  # logctx.bind_entry, inlined: this runs per entry
            try:
                outputs = spec.handle(env, ctx) or ()
            finally:
                reset_entry(token)
            if outputs:
                self.commit.stage(outputs, parent=env, now_ms=ctx.clock.now_ms(), config_rev=ctx.config.rev)
        except FatalError:
            raise
        except PermanentError as exc:
            return self.dead(stream, entry_id, fields, f"permanent: {exc}", attempts, redelivered=redelivered)
        except RetryableError as exc:
            return self.retry(stream, entry_id, fields, attempts, f"retryable: {exc}", redelivered=redelivered)
        except Exception as exc:  # a bug or a library error nobody translated: retry, then dead-letter
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
            return self.retry(stream, entry_id, fields, attempts, reason, redelivered=redelivered)
        finally:
            if ref:
                self.crash_guard.release(ref)
            if lock is not None:
                lock.release()
        if idem:
            self.commit.marks.append(idem)
            self.seen.add(idem)  # a later entry of this batch with the same key is a duplicate
        self.commit.ack(stream, entry_id, redelivered=redelivered)
        self.processed += 1
        if self.traces is not None:
            self.traces.done(env, stream, entry_id, started, ctx.clock.now_ms(), len(outputs))
        return Outcome.DONE

    def _trace_error(self, stream: str, entry_id: str, reason: str, outcome: str) -> None:
        if self.traces is not None:
            env, started = self.current
            now = self.context(0).clock.now_ms()
            self.traces.error(env, stream, entry_id, started or now, now, reason, outcome)
            self.current = (None, 0)

    def dead(self, stream, entry_id, fields, reason, attempts, *, redelivered: bool) -> str:
        self._trace_error(stream, entry_id, reason, "dead")
        dead_letter(self.r, stream=stream, group=self.group, entry_id=entry_id, fields=fields, reason=reason,
                    attempts=attempts, consumer=self.consumer, now_ms=self.context(0).clock.now_ms())
        # Acked at once, not with the batch: a worker killed before its batch commits must not
        # dead-letter the same entry again on its next start.
        retry_redis(self.r.xack)(stream, self.group, entry_id)
        self.commit.ack(stream, entry_id, redelivered=redelivered)
        logger.warning("dead-lettered {} {} after {} attempt(s): {}", stream, entry_id, attempts, reason[:200])
        return Outcome.DEAD

    def retry(self, stream, entry_id, fields, attempts, reason, *, redelivered: bool) -> str:
        failures = self.crash_guard.count_failure(f"{stream}/{entry_id}")
        if failures >= self.settings.max_attempts:
            return self.dead(stream, entry_id, fields, reason, failures, redelivered=True)
        self._trace_error(stream, entry_id, reason, "retry")
        logger.warning("entry {} {} failed (attempt {}): {}", stream, entry_id, attempts, reason.splitlines()[0])
        self._m_retry.inc()
        return Outcome.RETRY
